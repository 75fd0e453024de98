namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Merge parameters as text (<c>name=value</c> from a command line, or string values of a JSON config), checked
/// against a method's declared parameters by <see cref="Resolve(MergeMethodDescriptor)"/>.
/// </summary>
public sealed class MergeParameters
{
    private readonly Dictionary<string, string> _values;

    /// <summary>Parameters from name/value pairs; names are trimmed and compared case-insensitively.</summary>
    /// <exception cref="ArgumentException">An empty name, or a name given twice.</exception>
    public MergeParameters(IEnumerable<KeyValuePair<string, string>> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        _values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in values)
        {
            if (string.IsNullOrWhiteSpace(name))
            {
                throw new ArgumentException($"A merge parameter has an empty name (value '{value}').", nameof(values));
            }

            if (!_values.TryAdd(name.Trim(), value ?? string.Empty))
            {
                throw new ArgumentException($"Merge parameter '{name.Trim()}' is given more than once.", nameof(values));
            }
        }
    }

    /// <summary>No parameters: every one takes its default.</summary>
    public static MergeParameters Empty { get; } = new([]);

    /// <summary>The raw values, by parameter name (case-insensitive).</summary>
    public IReadOnlyDictionary<string, string> Values => _values;

    /// <summary>Parses assignments of the form <c>name=value</c>, e.g. <c>["keep=0.2", "trim=per-tensor"]</c>.</summary>
    public static MergeParameters Parse(params IEnumerable<string> assignments)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        var pairs = new List<KeyValuePair<string, string>>();
        foreach (string assignment in assignments)
        {
            int equals = assignment.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw new ArgumentException($"Merge parameter '{assignment}' is not of the form name=value.", nameof(assignments));
            }

            pairs.Add(new(assignment[..equals].Trim(), assignment[(equals + 1)..].Trim()));
        }

        return new MergeParameters(pairs);
    }

    /// <summary>Checks every value against <paramref name="method"/>'s declared parameters and fills in defaults.</summary>
    public ResolvedMergeParameters Resolve(MergeMethodDescriptor method)
    {
        ArgumentNullException.ThrowIfNull(method);
        return Resolve(method.Name, method.Parameters);
    }

    /// <summary>
    /// Checks every value against <paramref name="parameters"/> and fills in defaults. Names match case-insensitively and
    /// with '_' and '-' alike (<c>router_depth</c> is <c>router-depth</c>).
    /// </summary>
    public ResolvedMergeParameters Resolve(string methodName, IReadOnlyList<MergeParameterSpec> parameters)
    {
        ArgumentNullException.ThrowIfNull(methodName);
        ArgumentNullException.ThrowIfNull(parameters);
        var given = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in _values)
        {
            var spec = parameters.FirstOrDefault(spec => SameName(spec.Name, name));
            if (spec is null)
            {
                string known = parameters.Count == 0 ? "it takes none" : "known: " + string.Join(", ", parameters.Select(spec => spec.Name));
                throw new ArgumentException($"Unknown parameter '{name}' for merge method '{methodName}' ({known}).", name);
            }

            if (!given.TryAdd(spec.Name, value))
            {
                throw new ArgumentException($"Parameter '{spec.Name}' of merge method '{methodName}' is given twice.", spec.Name);
            }
        }

        var resolved = new Dictionary<string, object>(StringComparer.OrdinalIgnoreCase);
        foreach (var spec in parameters)
        {
            string text = given.TryGetValue(spec.Name, out string? value) ? value : spec.DefaultValue;
            resolved[spec.Name] = spec.Parse(methodName, text);
        }

        return new ResolvedMergeParameters(methodName, resolved);
    }

    /// <summary>Every declared parameter with the text of its value: the one given, or the default.</summary>
    public SortedDictionary<string, string> WithDefaults(IReadOnlyList<MergeParameterSpec> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var all = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var spec in parameters)
        {
            all[spec.Name] = _values.FirstOrDefault(kv => SameName(spec.Name, kv.Key)).Value?.Trim() ?? spec.DefaultValue;
        }

        return all;
    }

    internal static bool SameName(string a, string b) =>
        string.Equals(a.Replace('_', '-'), b.Trim().Replace('_', '-'), StringComparison.OrdinalIgnoreCase);
}
