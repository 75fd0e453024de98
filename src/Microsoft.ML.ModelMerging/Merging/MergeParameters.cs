namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Merge parameters as text (<c>name=value</c> from a command line, or string values of a JSON config), checked
/// against a method's declared parameters by <see cref="Resolve"/>.
/// </summary>
public sealed class MergeParameters
{
    private readonly Dictionary<string, string> _values;

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
        foreach (string name in _values.Keys)
        {
            if (!method.Parameters.Any(spec => string.Equals(spec.Name, name, StringComparison.OrdinalIgnoreCase)))
            {
                string known = method.Parameters.Count == 0 ? "it takes none" : "known: " + string.Join(", ", method.Parameters.Select(spec => spec.Name));
                throw new ArgumentException($"Unknown parameter '{name}' for merge method '{method.Name}' ({known}).");
            }
        }

        var resolved = new Dictionary<string, object>(StringComparer.OrdinalIgnoreCase);
        foreach (var spec in method.Parameters)
        {
            string text = _values.TryGetValue(spec.Name, out string? given) ? given : spec.DefaultValue;
            resolved[spec.Name] = spec.Parse(method.Name, text);
        }

        return new ResolvedMergeParameters(method.Name, resolved);
    }
}
