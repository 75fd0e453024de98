using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// One value for every permutation of a <see cref="PermutationSpec"/>. Convention (as <c>take</c> along an axis): the
/// permuted tensor's entry i along a permuted axis is the original's entry <c>p[i]</c>.
/// </summary>
internal sealed class PermutationSet
{
    /// <param name="values">Each permutation by name: a rearrangement of 0 … n−1.</param>
    /// <exception cref="ArgumentException">A value is not a permutation.</exception>
    public PermutationSet(IReadOnlyDictionary<string, int[]> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        foreach (var (name, p) in values)
        {
            var seen = new bool[p.Length];
            foreach (int i in p)
            {
                if ((uint)i >= (uint)p.Length || seen[i]) throw new ArgumentException($"'{name}' is not a permutation of 0…{p.Length - 1}.", nameof(values));
                seen[i] = true;
            }
        }

        Values = values;
    }

    /// <summary>Each permutation by name.</summary>
    public IReadOnlyDictionary<string, int[]> Values { get; }

    /// <summary>The permutation named <paramref name="name"/>.</summary>
    public int[] this[string name] => Values.TryGetValue(name, out int[]? p) ? p : throw new ArgumentException($"No permutation '{name}'.", nameof(name));

    /// <summary>Every permutation the identity: applying it changes nothing.</summary>
    public static PermutationSet Identity(PermutationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return new(spec.Sizes.ToDictionary(kv => kv.Key, kv => Enumerable.Range(0, kv.Value).ToArray(), StringComparer.Ordinal));
    }

    /// <summary>
    /// A seeded random value of every group: a random order of the blocks shared by the group's members, and a random
    /// order inside each block per member (what weight matching must be able to undo).
    /// </summary>
    public static PermutationSet Random(PermutationSpec spec, int seed)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var random = new System.Random(seed);
        var values = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var group in spec.Groups)
        {
            int size = spec.Sizes[group.Members[0]], blockSize = size / group.Blocks;
            int[] blocks = Shuffled(random, group.Blocks);
            foreach (string member in group.Members)
            {
                var p = new int[size];
                for (int b = 0; b < group.Blocks; b++)
                {
                    int[] within = Shuffled(random, blockSize);
                    for (int i = 0; i < blockSize; i++) p[b * blockSize + i] = blocks[b] * blockSize + within[i];
                }

                values[member] = p;
            }
        }

        return new(values);
    }

    private static int[] Shuffled(System.Random random, int n)
    {
        int[] p = Enumerable.Range(0, n).ToArray();
        random.Shuffle(p);
        return p;
    }

    /// <summary>The permutations that undo these ones.</summary>
    public PermutationSet Inverse() => new(Values.ToDictionary(kv => kv.Key, kv =>
    {
        var inverse = new int[kv.Value.Length];
        for (int i = 0; i < inverse.Length; i++) inverse[kv.Value[i]] = i;
        return inverse;
    }, StringComparer.Ordinal));

    /// <summary>
    /// New tensors: every tensor of <paramref name="state"/> permuted along the axes the spec names (tensors the spec does
    /// not name are copied). The caller owns the result.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor the spec names is missing or has another size along a permuted axis.</exception>
    public Dictionary<string, Tensor> Apply(PermutationSpec spec, IReadOnlyDictionary<string, Tensor> state)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(state);
        if (spec.Axes.Keys.FirstOrDefault(name => !state.ContainsKey(name)) is string missing)
            throw new ArgumentException($"The weights lack '{missing}', which the permutation spec names.", nameof(state));
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (name, tensor) in state)
            {
                using var scope = NewDisposeScope();
                result[name] = spec.Axes.TryGetValue(name, out var perAxis)
                    ? Permute(name, tensor, perAxis).DetachFromDisposeScope()
                    : tensor.detach().clone().DetachFromDisposeScope();
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }

        return result;
    }

    /// <summary>
    /// A new head for a backbone permuted by these permutations: the columns of its weight (a linear head's weight or a
    /// CLIP head's class embeddings; cosine similarity is unchanged when features and embeddings are reordered alike)
    /// follow <paramref name="featurePermutation"/>; null (features behind a visual projection) copies the head.
    /// </summary>
    public ClassificationHead Apply(ClassificationHead head, string? featurePermutation)
    {
        ArgumentNullException.ThrowIfNull(head);
        using var scope = NewDisposeScope();
        Tensor weight = head.Weight.detach();
        if (featurePermutation is not null) weight = Permute(ClassificationHead.WeightName, weight, [null, featurePermutation]);
        return head.Kind == ClassificationHeadKind.Linear
            ? ClassificationHead.Linear(head.ClassNames, weight, head.Bias!.detach())
            : ClassificationHead.Clip(head.ClassNames, weight, head.LogitScale!.detach().to(ScalarType.Float64).item<double>());
    }

    /// <summary><paramref name="value"/> permuted along every axis <paramref name="perAxis"/> names, except <paramref name="exceptAxis"/>.</summary>
    internal Tensor Permute(string name, Tensor value, IReadOnlyList<string?> perAxis, int exceptAxis = -1)
    {
        if (perAxis.Count != value.dim())
            throw new ArgumentException($"'{name}' has {value.dim()} axes; the permutation spec gives {perAxis.Count}.");
        Tensor result = value.detach();
        bool copied = false;
        for (int axis = 0; axis < perAxis.Count; axis++)
        {
            if (axis == exceptAxis || perAxis[axis] is not string permutation) continue;
            int[] p = this[permutation];
            if (value.shape[axis] != p.Length)
                throw new ArgumentException($"'{name}' has size {value.shape[axis]} along axis {axis}; permutation '{permutation}' has {p.Length}.");
            result = result.index_select(axis, tensor(p.Select(i => (long)i).ToArray(), device: value.device));
            copied = true;
        }

        return copied ? result : result.clone();
    }
}
