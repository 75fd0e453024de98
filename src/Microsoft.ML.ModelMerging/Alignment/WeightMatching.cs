using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>Settings of <see cref="WeightMatching.Match"/>.</summary>
internal sealed record WeightMatchingOptions
{
    /// <summary>Seed of the random order in which the groups are visited on each pass.</summary>
    public int Seed { get; init; }

    /// <summary>Passes over all groups at most; matching stops earlier when a pass improves no group.</summary>
    public int MaxIterations { get; init; } = 100;
}

/// <summary>What weight matching found: the permutations of the other model, and the passes it took.</summary>
/// <param name="Permutations">Apply these to the other model to bring it close to the reference.</param>
/// <param name="Iterations">Passes over all groups, the last one included (it is the pass that found nothing to improve).</param>
/// <param name="Converged">True when the last pass improved no group; false when <see cref="WeightMatchingOptions.MaxIterations"/> ran out.</param>
internal sealed record WeightMatchingResult(PermutationSet Permutations, int Iterations, bool Converged);

/// <summary>
/// Weight matching (Git Re-Basin, Ainsworth et al. 2023, Algorithm 1): the permutations of one model that maximise
/// Σ ⟨W_reference, W_other permuted⟩ over every tensor, by coordinate descent. Each step fixes all groups but one and solves
/// that group exactly as a linear assignment of the similarity of the reference's and the other model's units, summed over
/// every tensor axis the group permutes (with the other axes of those tensors permuted by the current values of their
/// groups). Groups are visited in a seeded random order; a step is kept only when it improves the objective, so the
/// objective never decreases and matching stops when a whole pass improves nothing. The descent runs from two starts, the
/// identity and a seeding pass that solves the groups in the order the exact evidence allows (see <c>Seed</c>), and the
/// better end is kept.
/// </summary>
internal static class WeightMatching
{
    /// <summary>Finds permutations of <paramref name="other"/> that match it to <paramref name="reference"/>.</summary>
    /// <exception cref="ArgumentException">A tensor of the spec is missing from either model, or its shapes differ.</exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked before each step).</exception>
    public static WeightMatchingResult Match(PermutationSpec spec, IReadOnlyDictionary<string, Tensor> reference, IReadOnlyDictionary<string, Tensor> other,
        WeightMatchingOptions? options = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        options ??= new WeightMatchingOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxIterations, nameof(options.MaxIterations));
        foreach (string name in spec.Axes.Keys)
        {
            if (!reference.TryGetValue(name, out var a)) throw new ArgumentException($"The reference lacks '{name}'.", nameof(reference));
            if (!other.TryGetValue(name, out var b)) throw new ArgumentException($"The model to align lacks '{name}'.", nameof(other));
            if (!a.shape.SequenceEqual(b.shape))
                throw new ArgumentException($"'{name}' has shape [{string.Join(", ", b.shape)}] in the model to align but [{string.Join(", ", a.shape)}] in the reference.", nameof(other));
        }

        // Two starts, the identity (plain Git Re-Basin) and the seeding pass (see Seed), each descended to convergence; the
        // better end is kept, so the result is never worse than plain descent's, and ties keep plain descent's.
        var plain = Descend(spec, reference, other, PermutationSet.Identity(spec), options, cancellation);
        var seeded = Descend(spec, reference, other, Seed(spec, reference, other, cancellation), options, cancellation);
        return Agreement(spec, reference, other, seeded.Permutations) > Agreement(spec, reference, other, plain.Permutations) ? seeded : plain;
    }

    /// <summary>Coordinate descent from <paramref name="start"/>: passes over the groups in a seeded random order until one improves nothing.</summary>
    internal static WeightMatchingResult Descend(PermutationSpec spec, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, PermutationSet start, WeightMatchingOptions options, CancellationToken cancellation)
    {
        var values = start.Values.ToDictionary(kv => kv.Key, kv => (int[])kv.Value.Clone(), StringComparer.Ordinal);
        var random = new Random(options.Seed);
        int[] order = Enumerable.Range(0, spec.Groups.Count).ToArray();
        for (int iteration = 1; iteration <= options.MaxIterations; iteration++)
        {
            bool improved = false;
            random.Shuffle(order);
            foreach (int g in order)
            {
                cancellation.ThrowIfCancellationRequested();
                improved |= Step(spec, spec.Groups[g], reference, other, values);
            }

            if (!improved) return new(new PermutationSet(values), iteration, Converged: true);
        }

        return new(new PermutationSet(values), options.MaxIterations, Converged: false);
    }

    /// <summary>
    /// A first pass that gives the descent a start: groups one at a time, each solved from only the tensors whose other
    /// permuted axes belong to groups already solved (or to none), the group with the most such evidence first. From the
    /// identity, the first steps of plain coordinate descent weigh every tensor with a wrongly ordered second axis, whose
    /// inner products are noise; in a wide model that noise (every MLP and attention matrix) drowns the signal of the
    /// tensors that are exact (embeddings, LayerNorm parameters, biases), and the descent settles in a poor optimum (a
    /// reordered copy of a ViT-B/32-size model was not recovered). Solved in this order, the residual stream comes from its
    /// own vectors, then each MLP and attention group from matrices whose other axis is already right. A group member with no
    /// such evidence is solved from everything, as plain descent does.
    /// </summary>
    internal static PermutationSet Seed(PermutationSpec spec, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, CancellationToken cancellation)
    {
        var values = PermutationSet.Identity(spec).Values.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var solved = new HashSet<string>(StringComparer.Ordinal);
        var remaining = spec.Groups.ToList();
        bool Ready(string tensor, int axis) => spec.Axes[tensor].Select((p, i) => i == axis || p is null || solved.Contains(p)).All(ok => ok);
        long Evidence(PermutationGroup group) =>
            group.Members.SelectMany(m => spec.AxesOf(m)).Where(a => Ready(a.Tensor, a.Axis)).Sum(a => reference[a.Tensor].numel());
        while (remaining.Count > 0)
        {
            cancellation.ThrowIfCancellationRequested();
            var group = remaining.MaxBy(Evidence)!;
            var current = new PermutationSet(values);
            // A member with no exact evidence yet is solved from everything, as plain descent would.
            double[][] similarity = group.Members.Select(m => Similarity(spec, m, reference, other, current,
                spec.AxesOf(m).Any(a => Ready(a.Tensor, a.Axis)) ? Ready : null)).ToArray();
            int[][] proposed = SolveGroup(spec.Sizes[group.Members[0]], group.Blocks, similarity);
            for (int m = 0; m < group.Members.Count; m++)
            {
                values[group.Members[m]] = proposed[m];
                solved.Add(group.Members[m]);
            }
            remaining.Remove(group);
        }

        return new PermutationSet(values);
    }

    /// <summary>Σ over the spec's tensors of ⟨reference, other permuted by <paramref name="permutations"/>⟩, in float64: the objective.</summary>
    private static double Agreement(PermutationSpec spec, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, PermutationSet permutations)
    {
        double sum = 0;
        foreach (var (name, axes) in spec.Axes)
        {
            using var scope = NewDisposeScope();
            using var permuted = permutations.Permute(name, other[name], axes).to(ScalarType.Float64);
            sum += reference[name].detach().to(ScalarType.Float64).mul(permuted).sum().item<double>();
        }

        return sum;
    }

    /// <summary>
    /// Solves one group exactly given all others. With blocks (attention heads), the value of pairing reference block h with
    /// other block g is the best within-block matching of each member on that pair of blocks (solved for every pair), and
    /// the block permutation is the assignment of those values: the exact joint optimum of block order and within-block
    /// orders, not a heuristic on block sums.
    /// </summary>
    private static bool Step(PermutationSpec spec, PermutationGroup group, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, Dictionary<string, int[]> values)
    {
        int n = spec.Sizes[group.Members[0]], blocks = group.Blocks, d = n / blocks, members = group.Members.Count;
        var current = new PermutationSet(values);
        double[][] similarity = group.Members.Select(m => Similarity(spec, m, reference, other, current)).ToArray();
        int[][] proposed = SolveGroup(n, blocks, similarity);
        double before = 0, after = 0;
        for (int m = 0; m < members; m++)
        {
            before += LinearAssignment.Value(similarity[m], n, values[group.Members[m]]);
            after += LinearAssignment.Value(similarity[m], n, proposed[m]);
        }

        // Same summation for both, so an unchanged optimum is never taken for a gain; ties keep the current value.
        if (!(after > before + 1e-12 * Math.Max(1, Math.Abs(before)))) return false;
        for (int m = 0; m < members; m++) values[group.Members[m]] = proposed[m];
        return true;
    }

    /// <summary>
    /// The exact optimum of one group given the similarity of reference unit i to other unit j for each member (row-major
    /// n×n): with blocks, the value of pairing reference block h with other block g is the best within-block matching of
    /// each member on that pair, and the blocks are assigned on those values. Returns, per member, the other unit each
    /// reference unit takes.
    /// </summary>
    internal static int[][] SolveGroup(int n, int blocks, IReadOnlyList<double[]> similarity)
    {
        int d = n / blocks, members = similarity.Count;
        var pairValue = new double[blocks * blocks];
        var within = new int[members, blocks * blocks][];
        var block = new double[d * d];
        for (int h = 0; h < blocks; h++)
        {
            for (int g = 0; g < blocks; g++)
            {
                for (int m = 0; m < members; m++)
                {
                    for (int i = 0; i < d; i++)
                        Array.Copy(similarity[m], (h * d + i) * n + g * d, block, i * d, d);
                    int[] assignment = LinearAssignment.Maximize(block, d);
                    within[m, h * blocks + g] = assignment;
                    pairValue[h * blocks + g] += LinearAssignment.Value(block, d, assignment);
                }
            }
        }

        int[] blockOrder = blocks == 1 ? [0] : LinearAssignment.Maximize(pairValue, blocks);
        var proposed = new int[members][];
        for (int m = 0; m < members; m++)
        {
            proposed[m] = new int[n];
            for (int h = 0; h < blocks; h++)
            {
                int[] inside = within[m, h * blocks + blockOrder[h]];
                for (int i = 0; i < d; i++) proposed[m][h * d + i] = blockOrder[h] * d + inside[i];
            }
        }

        return proposed;
    }

    /// <summary>
    /// C[i, j] = Σ over the tensor axes <paramref name="permutation"/> acts on of ⟨reference unit i, other unit j⟩, each
    /// tensor's other axes permuted by their current values; float64, one matrix product per tensor. With
    /// <paramref name="include"/>, only the (tensor, axis) pairs it accepts.
    /// </summary>
    private static double[] Similarity(PermutationSpec spec, string permutation, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, PermutationSet current, Func<string, int, bool>? include = null)
    {
        using var scope = NewDisposeScope();
        int n = spec.Sizes[permutation];
        Tensor? sum = null;
        foreach (var (name, axis) in spec.AxesOf(permutation))
        {
            if (include is not null && !include(name, axis)) continue;
            // Each tensor's float64 copies are freed before the next (at ViT-B/32 size the residual group's would add up to GBs).
            using var perTensor = NewDisposeScope();
            Tensor a = reference[name].detach().to(ScalarType.Float64).transpose(0, axis).reshape(n, -1);
            Tensor b = current.Permute(name, other[name], spec.Axes[name], exceptAxis: axis).to(ScalarType.Float64).transpose(0, axis).reshape(n, -1);
            if (sum is null) sum = a.matmul(b.t()).MoveToOuterDisposeScope();
            else sum.addmm_(a, b.t());
        }

        return sum is null ? new double[n * n] : sum.cpu().contiguous().data<double>().ToArray();
    }
}
