using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Exact r-th largest |v| of several series of values (one per expert) that arrive tensor by tensor and never all
/// fit in memory: two passes over the data, O(65536) counters per series.
/// </summary>
/// <remarks>
/// For non-negative finite floats the IEEE-754 bit pattern read as an integer orders exactly like the value.
/// Pass 1 counts values by the high 16 bits of that pattern, which locates the bucket holding the r-th largest and
/// how many values lie above it; pass 2 counts, inside that bucket only, by the low 16 bits, which pins the exact
/// pattern. Counting is bincount over shifted bits, i.e. tensor ops, on bounded chunks of each tensor.
/// </remarks>
public sealed class ExactMagnitudeSelector : IDisposable
{
    private const int BucketCount = 1 << 16;

    private readonly long _chunkElements;
    private readonly Tensor _coarseCounts;
    private readonly Tensor _fineCounts;
    private long[]? _buckets;
    private long[]? _remainingRanks;
    private float[]? _thresholds;

    public ExactMagnitudeSelector(int seriesCount)
        : this(seriesCount, chunkElements: 1 << 21)
    {
    }

    /// <param name="seriesCount">How many series (experts) are selected in.</param>
    /// <param name="chunkElements">How many values are turned into bits at once (bounds the temporaries).</param>
    internal ExactMagnitudeSelector(int seriesCount, long chunkElements)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seriesCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkElements, 1);
        SeriesCount = seriesCount;
        _chunkElements = chunkElements;
        _coarseCounts = zeros(seriesCount, BucketCount, dtype: ScalarType.Int64).DetachFromDisposeScope();
        _fineCounts = zeros(seriesCount, BucketCount, dtype: ScalarType.Int64).DetachFromDisposeScope();
    }

    public int SeriesCount { get; }

    /// <summary>How many values each series has received in pass 1.</summary>
    public IReadOnlyList<long> Counts
    {
        get
        {
            using var totals = _coarseCounts.sum(1);
            return totals.data<long>().ToArray();
        }
    }

    /// <summary>Pass 1: feeds values of shape [series, ...] (the magnitude is taken, values must be finite).</summary>
    public void AccumulateCoarse(Tensor values)
    {
        if (_buckets is not null)
        {
            throw new InvalidOperationException("Pass 1 of the magnitude selection is already finished.");
        }

        ForEachChunk(values, (series, bits) =>
        {
            var high = bits.bitwise_right_shift(tensor(16)).to_type(ScalarType.Int64);
            _coarseCounts.add_(CountPerSeries(high, series));
        });
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

        (_buckets, _remainingRanks) = LocateFromTop(_coarseCounts, ranksFromTop);
    }

    /// <summary>Pass 2: feeds the same values again, in any order.</summary>
    public void AccumulateFine(Tensor values)
    {
        if (_buckets is null || _thresholds is not null)
        {
            throw new InvalidOperationException("Pass 2 of the magnitude selection runs after FinishCoarse and before FinishFine.");
        }

        var buckets = _buckets;
        ForEachChunk(values, (series, bits) =>
        {
            var high = bits.bitwise_right_shift(tensor(16)).to_type(ScalarType.Int64);
            var inBucket = high.eq(tensor(buckets).index_select(0, series));
            var low = bits.bitwise_and(tensor(BucketCount - 1)).to_type(ScalarType.Int64);
            _fineCounts.add_(CountPerSeries(low, series, inBucket));
        });
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
            var (lows, _) = LocateFromTop(_fineCounts, _remainingRanks);
            _thresholds = new float[SeriesCount];
            for (int s = 0; s < SeriesCount; s++)
            {
                _thresholds[s] = _remainingRanks[s] == 0 ? 0f : BitConverter.Int32BitsToSingle((int)((_buckets[s] << 16) | lows[s]));
            }
        }

        return _thresholds;
    }

    public void Dispose()
    {
        _coarseCounts.Dispose();
        _fineCounts.Dispose();
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
    /// Calls <paramref name="perChunk"/> with (series index, int32 bits of |v|) for bounded slices of the values
    /// flattened series after series, so temporaries stay small for big tensors and small tensors of all series go
    /// in one slice.
    /// </summary>
    private void ForEachChunk(Tensor values, Action<Tensor, Tensor> perChunk)
    {
        if (values.dim() == 0 || values.shape[0] != SeriesCount)
        {
            throw new ArgumentException($"Expected values of shape [{SeriesCount}, ...]; got {MergeInputException.FormatShape(values.shape)}.", nameof(values));
        }

        long total = values.numel();
        long perSeries = total / SeriesCount;
        using var flat = values.reshape(total);
        for (long start = 0; start < total; start += _chunkElements)
        {
            using var scope = NewDisposeScope();
            long length = Math.Min(_chunkElements, total - start);
            var series = arange(start, start + length, dtype: ScalarType.Int64).div(perSeries, RoundingMode.floor);
            perChunk(series, Float32Bits(flat.narrow(0, start, length).abs()));
        }
    }

    /// <summary>[series, 65536] histogram of <paramref name="bins"/> (values in [0, 65536)), optionally only where <paramref name="where"/>.</summary>
    private Tensor CountPerSeries(Tensor bins, Tensor series, Tensor? where = null)
    {
        var global = bins.add(series.mul(BucketCount));
        var selected = where is null ? global : global.masked_select(where);
        return selected.bincount(null, (long)SeriesCount * BucketCount).reshape(SeriesCount, BucketCount);
    }

    /// <summary>
    /// Per series, the bin holding the value of rank r from the top and the rank of that value inside the bin.
    /// Rank 0 (no value wanted) gives bin 0 and rank 0.
    /// </summary>
    private static (long[] Bins, long[] RanksInBin) LocateFromTop(Tensor counts, IReadOnlyList<long> ranks)
    {
        using var scope = NewDisposeScope();
        var rankTensor = tensor(ranks.ToArray()).unsqueeze(1);
        var fromTop = counts.flip(1).cumsum(1);                      // fromTop[s, j]: values in the j+1 highest bins
        var position = fromTop.lt(rankTensor).sum(1, keepdim: true); // first j with fromTop ≥ r
        var abovePosition = position.sub(1).clamp_min(0);
        var countAbove = fromTop.gather(1, abovePosition).mul(position.gt(0));
        var noRank = rankTensor.eq(0);
        var bins = tensor(BucketCount - 1L).sub(position).masked_fill(noRank, 0);
        var ranksInBin = rankTensor.sub(countAbove).masked_fill(noRank, 0);
        return (bins.flatten().data<long>().ToArray(), ranksInBin.flatten().data<long>().ToArray());
    }
}
