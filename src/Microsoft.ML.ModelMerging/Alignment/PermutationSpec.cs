namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// Which permutation acts on which axis of which tensor of a model: permuting every axis with its permutation (the same
/// permutation wherever it appears) leaves the function the model computes unchanged. Weight matching chooses the
/// permutations; <see cref="PermutationSet"/> applies them.
/// </summary>
internal sealed class PermutationSpec
{
    private readonly Dictionary<string, List<(string Tensor, int Axis)>> _axesOf;

    /// <param name="sizes">Each permutation's length.</param>
    /// <param name="axes">For each tensor, the permutation of each of its axes (null: not permuted).</param>
    /// <param name="groups">The steps of weight matching; together they cover every permutation once.</param>
    public PermutationSpec(IReadOnlyDictionary<string, int> sizes, IReadOnlyDictionary<string, IReadOnlyList<string?>> axes, IReadOnlyList<PermutationGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(sizes);
        ArgumentNullException.ThrowIfNull(axes);
        ArgumentNullException.ThrowIfNull(groups);
        Sizes = sizes;
        Axes = axes;
        Groups = groups;
        _axesOf = sizes.Keys.ToDictionary(p => p, _ => new List<(string, int)>(), StringComparer.Ordinal);
        foreach (var (tensor, perAxis) in axes)
        {
            for (int axis = 0; axis < perAxis.Count; axis++)
            {
                if (perAxis[axis] is not string permutation) continue;
                if (!_axesOf.TryGetValue(permutation, out var list))
                    throw new ArgumentException($"Tensor '{tensor}' axis {axis} names permutation '{permutation}', which has no size.", nameof(axes));
                list.Add((tensor, axis));
            }
        }

        var covered = groups.SelectMany(g => g.Members).ToList();
        if (covered.Count != covered.Distinct(StringComparer.Ordinal).Count() || !covered.ToHashSet(StringComparer.Ordinal).SetEquals(sizes.Keys))
            throw new ArgumentException("The groups must name every permutation exactly once.", nameof(groups));
        foreach (var group in groups)
        {
            int size = sizes[group.Members[0]];
            if (group.Blocks <= 0 || size % group.Blocks != 0 || group.Members.Any(m => sizes[m] != size))
                throw new ArgumentException($"Group '{group.Name}': its members must share one size divisible by its {group.Blocks} block(s).", nameof(groups));
        }
    }

    /// <summary>Each permutation's length, by name.</summary>
    public IReadOnlyDictionary<string, int> Sizes { get; }

    /// <summary>For each tensor, the permutation acting on each of its axes (null where none does).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string?>> Axes { get; }

    /// <summary>The steps of weight matching, each choosing some permutations jointly.</summary>
    public IReadOnlyList<PermutationGroup> Groups { get; }

    /// <summary>Every (tensor, axis) a permutation acts on.</summary>
    public IReadOnlyList<(string Tensor, int Axis)> AxesOf(string permutation) =>
        _axesOf.TryGetValue(permutation, out var list) ? list : throw new ArgumentException($"No permutation '{permutation}' in the spec.", nameof(permutation));
}
