using System.Text;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>A registry entry: a method's name, summary, declared parameters and how to create it from them.</summary>
public sealed class MergeMethodDescriptor
{
    private readonly Func<ResolvedMergeParameters, IMergeMethod> _factory;

    /// <summary>Describes a method for a registry.</summary>
    /// <param name="name">The registry name (case-insensitive when looked up), e.g. <c>ties</c>.</param>
    /// <param name="summary">One line for <c>merge --list</c>.</param>
    /// <param name="parameters">The declared parameters; names must be unique.</param>
    /// <param name="factory">Creates a method from checked parameters, defaults filled in.</param>
    /// <param name="usesBase">False when the result does not depend on the base (see <see cref="UsesBase"/>).</param>
    /// <exception cref="ArgumentException">A blank name or a parameter declared twice.</exception>
    public MergeMethodDescriptor(
        string name,
        string summary,
        IReadOnlyList<MergeParameterSpec> parameters,
        Func<ResolvedMergeParameters, IMergeMethod> factory,
        bool usesBase = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(summary);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(factory);
        var duplicate = parameters.GroupBy(spec => spec.Name, StringComparer.OrdinalIgnoreCase).FirstOrDefault(group => group.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Merge method '{name}' declares parameter '{duplicate.Key}' twice.", nameof(parameters));
        }

        Name = name;
        Summary = summary;
        Parameters = parameters;
        _factory = factory;
        UsesBase = usesBase;
    }

    /// <summary>
    /// False for a method whose result does not depend on the base (simple average): it merges the experts of a pool that
    /// has none, with any expert standing in as the base of the task-vector arithmetic.
    /// </summary>
    public bool UsesBase { get; }

    /// <summary>The registry name, e.g. <c>ties</c>.</summary>
    public string Name { get; }

    /// <summary>One line saying what the method computes.</summary>
    public string Summary { get; }

    /// <summary>The declared parameters, with kinds, defaults and ranges.</summary>
    public IReadOnlyList<MergeParameterSpec> Parameters { get; }

    /// <summary>Creates a fresh method instance; absent parameters take their defaults.</summary>
    public IMergeMethod Create(MergeParameters? parameters = null) =>
        _factory((parameters ?? MergeParameters.Empty).Resolve(this));

    /// <summary>The method's <c>--list</c> entry: name, summary, then one line per parameter.</summary>
    public string Describe()
    {
        var text = new StringBuilder();
        text.Append(Name).Append(": ").Append(Summary);
        foreach (var parameter in Parameters)
        {
            text.AppendLine().Append("    ").Append(parameter);
        }

        if (Parameters.Count == 0)
        {
            text.AppendLine().Append("    (no parameters)");
        }

        return text.ToString();
    }
}
