using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Exact r-th largest |v| of several series of values (one per expert) that arrive tensor by tensor and never all
/// fit in memory: two passes over the data, 2 × 65536 counters per series.
/// </summary>
/// <remarks>
/// For non-negative finite floats the IEEE-754 bit pattern read as an integer orders exactly like the value, and
/// |v| is v's pattern with the sign bit cleared. Pass 1 counts values by the high 16 bits of that pattern, which locates
/// the bucket holding the r-th largest and how many values lie above it; pass 2 counts, inside that bucket only, by the
/// low 16 bits, which pins the exact pattern. Counting reads the float32 storage in place (no temporaries), in slices
/// of bounded length.
/// </remarks>
internal sealed class ExactMagnitudeSelector : IDisposable
{
    private const int BucketCount = 1 << 16;
    private const uint MagnitudeMask = 0x7FFF_FFFF;

    /// <summary>Slices shorter than this count straight into the totals; longer ones through 4 interleaved histograms.</summary>
    private const int InterleaveThreshold = 1 << 16;

    private readonly long _chunkElements;
    // Per series, allocated when first counted into (a partial of one pass never needs the other pass's histograms).
    private readonly long[]?[] _coarseCounts;
    private readonly long[]?[] _fineCounts;
    private int[]? _scratch; // allocated on first use: thread-local partials counting small chunks never need it
    private long[]? _buckets;
    private long[]? _remainingRanks;
    private float[]? _thresholds;

    private delegate void SeriesCounter(int series, ReadOnlySpan<uint> bits);

    public ExactMagnitudeSelector(int seriesCount)
        : this(seriesCount, chunkElements: 1 << 24)
    {
    }

    /// <param name="seriesCount">How many series (experts) are selected in.</param>
    /// <param name="chunkElements">How many values are counted per slice (at most 2^31 − 1).</param>
    internal ExactMagnitudeSelector(int seriesCount, long chunkElements)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seriesCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkElements, 1);
        SeriesCount = seriesCount;
        _chunkElements = Math.Min(chunkElements, int.MaxValue);
        _coarseCounts = new long[seriesCount][];
        _fineCounts = new long[seriesCount][];
    }

    public int SeriesCount { get; }

    /// <summary>How many values each series has received in pass 1.</summary>
    public IReadOnlyList<long> Counts => [.. _coarseCounts.Select(counts => counts?.Sum() ?? 0)];

    private long[] Coarse(int series) => _coarseCounts[series] ??= new long[BucketCount];

    private long[] Fine(int series) => _fineCounts[series] ??= new long[BucketCount];

    /// <summary>Pass 1: feeds values of shape [series, ...] (the magnitude is taken, values must be finite).</summary>
    public void AccumulateCoarse(Tensor values)
    {
        if (_buckets is not null)
        {
            throw new InvalidOperationException("Pass 1 of the magnitude selection is already finished.");
        }

        ForEachSeries(values, (series, bits) => CountHigh(bits, Coarse(series)));
    }

    /// <summary>
    /// Ends pass 1. <paramref name="ranksFromTop"/>[s] is the 1-based rank from the largest of the wanted value of
    /// series s, in [1, count], or 0 for "no threshold" (the result is then 0).
    /// </summary>
    public void FinishCoarse(IReadOnlyList<long> ranksFromTop)
    {
        ArgumentNullException.ThrowIfNull(ranksFromTop);
        if (ranksFromTop.Count != SeriesCount)
        {
            throw new ArgumentException($"{ranksFromTop.Count} rank(s) given for {SeriesCount} series.", nameof(ranksFromTop));
        }

        var counts = Counts;
        for (int s = 0; s < SeriesCount; s++)
        {
            if (ranksFromTop[s] < 0 || ranksFromTop[s] > counts[s])
            {
                throw new ArgumentOutOfRangeException(nameof(ranksFromTop), ranksFromTop[s], $"Series {s} has {counts[s]} value(s).");
            }
        }

        (_buckets, _remainingRanks) = LocateFromTop([.. Enumerable.Range(0, SeriesCount).Select(Coarse)], ranksFromTop);
    }

    /// <summary>Pass 2: feeds the same values again, in any order.</summary>
    public void AccumulateFine(Tensor values)
    {
        if (_buckets is null || _thresholds is not null)
        {
            throw new InvalidOperationException("Pass 2 of the magnitude selection runs after FinishCoarse and before FinishFine.");
        }

        var buckets = _buckets;
        ForEachSeries(values, (series, bits) => CountLowInBucket(bits, (uint)buckets[series], Fine(series)));
    }

    /// <summary>Ends pass 2 and returns, per series, the exact wanted magnitude.</summary>
    public IReadOnlyList<float> FinishFine()
    {
        if (_buckets is null || _remainingRanks is null)
        {
            throw new InvalidOperationException("FinishFine needs pass 1 finished (FinishCoarse) and pass 2 fed.");
        }

        if (_thresholds is null)
        {
            var (lows, _) = LocateFromTop([.. Enumerable.Range(0, SeriesCount).Select(Fine)], _remainingRanks);
            _thresholds = new float[SeriesCount];
            for (int s = 0; s < SeriesCount; s++)
            {
                _thresholds[s] = _remainingRanks[s] == 0 ? 0f : BitConverter.Int32BitsToSingle((int)((_buckets[s] << 16) | lows[s]));
            }
        }

        return _thresholds;
    }

    /// <summary>
    /// An empty selector in the same pass (same buckets) for one thread; <see cref="AddCounts"/> folds its counts back.
    /// Counting on several threads then costs one histogram per thread instead of a lock per value.
    /// </summary>
    internal ExactMagnitudeSelector CreatePartial() => new(SeriesCount, _chunkElements) { _buckets = _buckets };

    /// <summary>Adds the counts of a partial made by <see cref="CreatePartial"/> (counts are sums, so order does not matter).</summary>
    internal void AddCounts(ExactMagnitudeSelector partial)
    {
        if (partial.SeriesCount != SeriesCount) throw new ArgumentException("The partial counts another number of series.", nameof(partial));
        for (int s = 0; s < SeriesCount; s++)
        {
            if (partial._coarseCounts[s] is { } coarse)
            {
                var into = Coarse(s);
                for (int bucket = 0; bucket < BucketCount; bucket++) into[bucket] += coarse[bucket];
            }

            if (partial._fineCounts[s] is { } fine)
            {
                var into = Fine(s);
                for (int bucket = 0; bucket < BucketCount; bucket++) into[bucket] += fine[bucket];
            }
        }
    }

    /// <summary>Pass 1 for values of one series (finite float32), e.g. a chunk of a tensor.</summary>
    internal void AccumulateCoarse(int series, ReadOnlySpan<float> values) =>
        CountHigh(MemoryMarshal.Cast<float, uint>(values), Coarse(series));

    /// <summary>Pass 2 for values of one series, after <see cref="FinishCoarse"/>.</summary>
    internal void AccumulateFine(int series, ReadOnlySpan<float> values)
    {
        var buckets = _buckets ?? throw new InvalidOperationException("Pass 2 of the magnitude selection runs after FinishCoarse.");
        CountLowInBucket(MemoryMarshal.Cast<float, uint>(values), (uint)buckets[series], Fine(series));
    }

    /// <summary>Nothing native is held any more; kept so callers can scope the selector's lifetime.</summary>
    public void Dispose()
    {
    }

    /// <summary>
    /// The IEEE-754 bits of float32 values as int32 (a memory copy, chunked because a span is limited to 2 GiB).
    /// </summary>
    internal static Tensor Float32Bits(Tensor values, long chunkElements = 1 << 24)
    {
        using var scope = NewDisposeScope();
        var source = values.to_type(ScalarType.Float32).cpu().contiguous().flatten();
        var bits = empty(source.shape, dtype: ScalarType.Int32);
        long count = source.shape[0];
        for (long start = 0; start < count; start += chunkElements)
        {
            long length = Math.Min(chunkElements, count - start);
            using var from = source.narrow(0, start, length);
            using var to = bits.narrow(0, start, length);
            to.bytes = from.bytes;
        }

        return bits.reshape(values.shape).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Calls <paramref name="count"/> with (series index, float32 bit patterns) for bounded slices of each series'
    /// values, read in place from contiguous float32 CPU storage (a copy is made only for other dtypes or layouts).
    /// </summary>
    private void ForEachSeries(Tensor values, SeriesCounter count)
    {
        if (values.dim() == 0 || values.shape[0] != SeriesCount)
        {
            throw new ArgumentException($"Expected values of shape [{SeriesCount}, ...]; got {MergeInputException.FormatShape(values.shape)}.", nameof(values));
        }

        using var scope = NewDisposeScope();
        var source = values.to_type(ScalarType.Float32).cpu().contiguous();
        long perSeries = source.numel() / SeriesCount;
        var flat = source.reshape(-1);
        for (int series = 0; series < SeriesCount; series++)
        {
            using var row = flat.narrow(0, series * perSeries, perSeries);
            Checkpoints.TensorBytes.Visit(row, bytes =>
            {
                var bits = MemoryMarshal.Cast<byte, uint>(bytes);
                for (int start = 0; start < bits.Length; start += (int)_chunkElements)
                {
                    count(series, bits.Slice(start, (int)Math.Min(_chunkElements, bits.Length - start)));
                }
            });
        }
    }

    /// <summary>counts[high 16 bits of |v|]++ for every value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CountHigh(ReadOnlySpan<uint> bits, long[] counts)
    {
        if (bits.Length < InterleaveThreshold)
        {
            foreach (uint b in bits)
            {
                counts[(b & MagnitudeMask) >> 16]++;
            }

            return;
        }

        // Neighbouring values often share a bucket: four histograms let consecutive increments proceed independently.
        var scratch = _scratch ??= new int[4 * BucketCount];
        int i = 0;
        for (; i + 4 <= bits.Length; i += 4)
        {
            scratch[(bits[i] & MagnitudeMask) >> 16]++;
            scratch[BucketCount + (int)((bits[i + 1] & MagnitudeMask) >> 16)]++;
            scratch[(2 * BucketCount) + (int)((bits[i + 2] & MagnitudeMask) >> 16)]++;
            scratch[(3 * BucketCount) + (int)((bits[i + 3] & MagnitudeMask) >> 16)]++;
        }

        for (; i < bits.Length; i++)
        {
            scratch[(bits[i] & MagnitudeMask) >> 16]++;
        }

        for (int bucket = 0; bucket < BucketCount; bucket++)
        {
            counts[bucket] += (long)scratch[bucket] + scratch[BucketCount + bucket] + scratch[(2 * BucketCount) + bucket] + scratch[(3 * BucketCount) + bucket];
        }

        Array.Clear(scratch);
    }

    /// <summary>counts[low 16 bits of |v|]++ for the values whose high 16 bits are <paramref name="bucket"/>.</summary>
    /// <remarks>Few values fall in the bucket: whole vectors are compared at once and only those with a hit are counted lane by lane.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CountLowInBucket(ReadOnlySpan<uint> bits, uint bucket, long[] counts)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var magnitude = new Vector<uint>(MagnitudeMask);
            var target = new Vector<uint>(bucket);
            var vectors = MemoryMarshal.Cast<uint, Vector<uint>>(bits);
            foreach (var v in vectors)
            {
                if (Vector.EqualsAny(Vector.ShiftRightLogical(v & magnitude, 16), target)) CountLowInBucketScalar(v, bucket, counts);
            }

            i = vectors.Length * Vector<uint>.Count;
        }

        for (; i < bits.Length; i++) CountLowInBucketScalar(bits[i], bucket, counts);
    }

    private static void CountLowInBucketScalar(Vector<uint> lanes, uint bucket, long[] counts)
    {
        for (int lane = 0; lane < Vector<uint>.Count; lane++) CountLowInBucketScalar(lanes[lane], bucket, counts);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CountLowInBucketScalar(uint bits, uint bucket, long[] counts)
    {
        uint magnitude = bits & MagnitudeMask;
        if (magnitude >> 16 == bucket) counts[magnitude & (BucketCount - 1)]++;
    }

    /// <summary>
    /// Per series, the bin holding the value of rank r from the top and the rank of that value inside the bin.
    /// Rank 0 (no value wanted) gives bin 0 and rank 0.
    /// </summary>
    private static (long[] Bins, long[] RanksInBin) LocateFromTop(long[][] counts, IReadOnlyList<long> ranks)
    {
        var bins = new long[counts.Length];
        var ranksInBin = new long[counts.Length];
        for (int s = 0; s < counts.Length; s++)
        {
            if (ranks[s] == 0)
            {
                continue;
            }

            long above = 0;
            for (int bin = BucketCount - 1; bin >= 0; bin--)
            {
                if (above + counts[s][bin] >= ranks[s])
                {
                    bins[s] = bin;
                    ranksInBin[s] = ranks[s] - above;
                    break;
                }

                above += counts[s][bin];
            }
        }

        return (bins, ranksInBin);
    }
}
