namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Merge methods by name, each declaring its parameters and defaults. Immutable; <see cref="With"/> extends it.</summary>
public sealed class MergeMethodRegistry
{
    private readonly Dictionary<string, MergeMethodDescriptor> _byName;

    /// <summary>A registry of the given methods, in that order.</summary>
    /// <exception cref="ArgumentException">Two methods share a name (case-insensitive).</exception>
    public MergeMethodRegistry(IEnumerable<MergeMethodDescriptor> methods)
    {
        ArgumentNullException.ThrowIfNull(methods);
        Methods = [.. methods];
        _byName = new Dictionary<string, MergeMethodDescriptor>(StringComparer.OrdinalIgnoreCase);
        foreach (var method in Methods)
        {
            if (!_byName.TryAdd(method.Name, method))
            {
                throw new ArgumentException($"Merge method '{method.Name}' is registered twice.", nameof(methods));
            }
        }
    }

    /// <summary>Every built-in weight-only method.</summary>
    public static MergeMethodRegistry Default { get; } = new(
    [
        SimpleAverageMerge.Descriptor,
        TaskArithmeticMerge.Descriptor,
        TiesMerge.Descriptor,
        DareMerge.Descriptor,
        TallMasksMerge.Descriptor,
        ConsensusMerge.Descriptor,
        EmrMerge.Descriptor,
    ]);

    /// <summary>In registration order.</summary>
    public IReadOnlyList<MergeMethodDescriptor> Methods { get; }

    /// <summary>Looks a method up by name (case-insensitive); false when there is none.</summary>
    public bool TryGet(string name, out MergeMethodDescriptor method) =>
        _byName.TryGetValue(name, out method!);

    /// <summary>The method of that name (case-insensitive).</summary>
    /// <exception cref="ArgumentException">No such method; the message lists the known ones.</exception>
    public MergeMethodDescriptor Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryGet(name, out var method)
            ? method
            : throw new ArgumentException($"Unknown merge method '{name}' (known: {string.Join(", ", Methods.Select(m => m.Name))}).", nameof(name));
    }

    /// <summary>Creates method <paramref name="name"/> with its parameters checked; absent ones take their defaults.</summary>
    public IMergeMethod Create(string name, MergeParameters? parameters = null) => Get(name).Create(parameters);

    /// <summary>A registry with one more method.</summary>
    public MergeMethodRegistry With(MergeMethodDescriptor method) => new([.. Methods, method]);

    /// <summary>The text of <c>mlmerge merge --list</c>: every method with its parameters and defaults.</summary>
    public string Describe() => string.Join(Environment.NewLine, Methods.Select(method => method.Describe()));
}
