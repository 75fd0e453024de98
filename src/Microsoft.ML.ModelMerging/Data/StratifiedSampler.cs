namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Seeded, per-class stratified sampling of disjoint parts from a labelled pool: every part keeps the pool's class
/// proportions (up to rounding), and the same labels, sizes and seed always give the same indices.
/// </summary>
public static class StratifiedSampler
{
    /// <summary>
    /// Draws disjoint index sets of the requested sizes from a pool with the given labels. Within each part the
    /// indices are in a seeded random order (pools grouped by class, like the MNIST JSON files, come out mixed).
    /// </summary>
    /// <param name="labels">The label of every pool item, in [0, classCount).</param>
    /// <param name="classCount">Number of classes.</param>
    /// <param name="partSizes">Size of each part; their sum may not exceed the pool.</param>
    /// <param name="seed">Seed of the draw.</param>
    public static int[][] Split(ReadOnlySpan<int> labels, int classCount, IReadOnlyList<int> partSizes, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        ArgumentNullException.ThrowIfNull(partSizes);
        if (partSizes.Any(size => size < 0))
        {
            throw new ArgumentOutOfRangeException(nameof(partSizes), "Part sizes cannot be negative.");
        }

        long requested = partSizes.Sum(size => (long)size);
        if (requested > labels.Length)
        {
            throw new ArgumentException($"Asked for {requested} items ({string.Join(" + ", partSizes)}) from a pool of {labels.Length}.", nameof(partSizes));
        }

        var random = new SeededRandom(seed, stream: 0x5EED5);
        int[][] byClass = GroupByClass(labels, classCount);
        foreach (int[] members in byClass)
        {
            random.Shuffle(members.AsSpan());
        }

        // First decide how many of each class the whole sample takes, then share those among the parts.
        long[] remaining = Allocate(requested, byClass.Select(members => (long)members.Length).ToArray());
        var taken = new int[classCount];
        var parts = new int[partSizes.Count][];
        for (int p = 0; p < partSizes.Count; p++)
        {
            long[] quota = p == partSizes.Count - 1 ? (long[])remaining.Clone() : Allocate(partSizes[p], remaining);
            var part = new List<int>(partSizes[p]);
            for (int c = 0; c < classCount; c++)
            {
                part.AddRange(byClass[c].AsSpan(taken[c], (int)quota[c]));
                taken[c] += (int)quota[c];
                remaining[c] -= quota[c];
            }

            parts[p] = part.ToArray();
            random.Shuffle(parts[p].AsSpan());
        }

        return parts;
    }

    private static int[][] GroupByClass(ReadOnlySpan<int> labels, int classCount)
    {
        var counts = new int[classCount];
        for (int i = 0; i < labels.Length; i++)
        {
            if ((uint)labels[i] >= (uint)classCount)
            {
                throw new ArgumentException($"Label {labels[i]} at position {i} is outside [0, {classCount - 1}].", nameof(labels));
            }

            counts[labels[i]]++;
        }

        var groups = counts.Select(count => new int[count]).ToArray();
        Array.Clear(counts);
        for (int i = 0; i < labels.Length; i++)
        {
            groups[labels[i]][counts[labels[i]]++] = i;
        }

        return groups;
    }

    /// <summary>
    /// Splits <paramref name="total"/> over classes in proportion to <paramref name="available"/> by the largest
    /// remainder method, in exact integer arithmetic (ties go to the lower class index). Never exceeds what a class has.
    /// </summary>
    private static long[] Allocate(long total, long[] available)
    {
        long pool = available.Sum();
        var quota = new long[available.Length];
        if (total == 0 || pool == 0)
        {
            return quota;
        }

        var remainders = new (long Remainder, int Class)[available.Length];
        long assigned = 0;
        for (int c = 0; c < available.Length; c++)
        {
            quota[c] = total * available[c] / pool;
            remainders[c] = (total * available[c] % pool, c);
            assigned += quota[c];
        }

        foreach (var (_, c) in remainders.OrderByDescending(r => r.Remainder).ThenBy(r => r.Class).Take((int)(total - assigned)))
        {
            quota[c]++;
        }

        return quota;
    }
}
