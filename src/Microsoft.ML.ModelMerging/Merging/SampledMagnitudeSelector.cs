using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Exact r-th largest |v| of several series (one per expert) in a single full pass, Floyd–Rivest style: a small sample
/// of the values brackets the wanted magnitude between two bounds; the full pass then counts the values above the
/// upper bound and, between the bounds, counts them per bit pattern or keeps them, and the wanted one is found among
/// them. When the bracket
/// misses (an unrepresentative sample) or holds more values than memory allows, the series is reported unresolved and
/// the caller falls back to <see cref="ExactMagnitudeSelector"/>'s two counting passes. The answer never depends on
/// the sample, only whether it is found in one pass.
/// </summary>
/// <remarks>
/// Magnitudes are compared as IEEE-754 bit patterns with the sign cleared (for finite floats they order like the
/// values). The bracket is the sample's order statistics at the wanted fraction ± <see cref="MarginDeviations"/>
/// binomial standard deviations, so it holds about 2·5·√(p(1−p)/m) of all values for a sample of m values: for
/// 2^21 sampled values and p = 0.2, 0.28%. A bracket spanning at most <see cref="DefaultMaxCountedPatterns"/> bit patterns (the
/// usual case: its width in value depends on the sample, not on the model's size) is counted pattern by pattern, in
/// memory independent of the model; a wider one keeps its values, within <c>maxWindowValues</c>.
/// </remarks>
internal sealed class SampledMagnitudeSelector
{
    private const uint MagnitudeMask = 0x7FFF_FFFF;
    private const double MarginDeviations = 5;

    /// <summary>Brackets spanning at most this many float32 bit patterns are counted per pattern (2 MiB of counts per series, shared by the threads).</summary>
    internal const uint DefaultMaxCountedPatterns = 1 << 18;

    private readonly uint _maxCountedPatterns;
    private readonly double _fractionFromTop;
    private readonly List<uint>[] _sample;
    private readonly long[] _counts;
    private readonly long[] _above;
    private readonly List<uint>[] _window;
    private readonly long[]?[] _patternCounts;
    private readonly int[] _overflowed;
    private long _windowRoom;
    private uint[]? _low;
    private uint[]? _high;

    /// <param name="seriesCount">Number of independent series (TIES: one per task).</param>
    /// <param name="fractionFromTop">About which fraction of each series lies at or above the wanted magnitude (TIES: its keep fraction).</param>
    /// <param name="maxSampleValues">Sample values kept per series (more are ignored).</param>
    /// <param name="maxWindowValues">Values kept between the bounds over all series; past that a series is unresolved.</param>
    /// <param name="maxCountedPatterns">Brackets spanning at most this many bit patterns are counted per pattern instead.</param>
    public SampledMagnitudeSelector(int seriesCount, double fractionFromTop, int maxSampleValues = 1 << 22, long maxWindowValues = 1 << 24,
        uint maxCountedPatterns = DefaultMaxCountedPatterns)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seriesCount, 1);
        SeriesCount = seriesCount;
        _maxCountedPatterns = maxCountedPatterns;
        _fractionFromTop = Math.Clamp(fractionFromTop, 0, 1);
        MaxSampleValues = maxSampleValues;
        _windowRoom = maxWindowValues;
        _sample = [.. Enumerable.Range(0, seriesCount).Select(_ => new List<uint>())];
        _counts = new long[seriesCount];
        _above = new long[seriesCount];
        _window = [.. Enumerable.Range(0, seriesCount).Select(_ => new List<uint>())];
        _patternCounts = new long[]?[seriesCount];
        _overflowed = new int[seriesCount];
    }

    public int SeriesCount { get; }

    public int MaxSampleValues { get; }

    /// <summary>How many values each series held in the full pass.</summary>
    public IReadOnlyList<long> Counts => _counts;

    /// <summary>Sample phase, one per thread: keeps the magnitudes it is given.</summary>
    public SamplePartial CreateSamplePartial() => new(this);

    public void AddSample(SamplePartial partial)
    {
        for (int s = 0; s < SeriesCount; s++)
        {
            int room = MaxSampleValues - _sample[s].Count;
            _sample[s].AddRange(room >= partial.Values[s].Count ? partial.Values[s] : partial.Values[s].Take(room));
        }
    }

    /// <summary>Ends the sample phase: the bounds of each series' bracket.</summary>
    public void FinishSample()
    {
        _low = new uint[SeriesCount];
        _high = new uint[SeriesCount];
        Parallel.For(0, SeriesCount, s =>
        {
            var values = CollectionsMarshal.AsSpan(_sample[s]);
            int m = values.Length;
            double target = _fractionFromTop * m;
            double margin = (MarginDeviations * Math.Sqrt(m * _fractionFromTop * (1 - _fractionFromTop))) + 2;
            long upper = (long)Math.Floor(target - margin) + 1; // 1-based ranks from the top
            long lower = (long)Math.Ceiling(target + margin) + 1;
            // Past either end of the sample the bracket is open on that side (everything above, or below, is kept).
            _high[s] = upper < 1 || upper > m ? uint.MaxValue : LargestAt(values, upper);
            _low[s] = lower < 1 || lower > m ? 0 : LargestAt(values, lower);
            if (_high[s] - _low[s] < _maxCountedPatterns) _patternCounts[s] = new long[_high[s] - _low[s] + 1];
            _sample[s] = [];
        });
    }

    /// <summary>
    /// The value of 1-based rank <paramref name="rank"/> from the largest, by radix selection: count the values by their
    /// high 16 bits, then sort only the bucket holding the rank (no full sort of millions of values).
    /// </summary>
    internal static uint LargestAt(ReadOnlySpan<uint> values, long rank)
    {
        if (rank < 1 || rank > values.Length) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"{values.Length} value(s).");
        var counts = new int[1 << 16];
        foreach (uint v in values) counts[v >> 16]++;
        long above = 0;
        int bucket = counts.Length - 1;
        for (; above + counts[bucket] < rank; bucket--) above += counts[bucket];
        var inBucket = new uint[counts[bucket]];
        int n = 0;
        foreach (uint v in values)
        {
            if (v >> 16 == bucket) inBucket[n++] = v;
        }

        Array.Sort(inBucket);
        return inBucket[inBucket.Length - (int)(rank - above)];
    }

    /// <summary>Full pass, one per thread: counts every value, those above the bracket, and keeps those inside it.</summary>
    public WindowPartial CreateWindowPartial() => new(this, _low ?? throw new InvalidOperationException("The sample phase is not finished."), _high!);

    /// <summary>Whether series <paramref name="series"/>'s bracket is counted per bit pattern (rather than its values kept).</summary>
    internal bool IsCounted(int series) => _patternCounts[series] is not null;

    public void AddWindow(WindowPartial partial)
    {
        for (int s = 0; s < SeriesCount; s++)
        {
            _counts[s] += partial.Counts[s];
            _above[s] += partial.Above[s];
            // Counted brackets were counted into the shared counts already.
            if (_patternCounts[s] is null && _overflowed[s] == 0) _window[s].AddRange(partial.Window[s]);
        }
    }

    /// <summary>
    /// Ends the full pass: per series, the magnitude of rank <paramref name="rankFromTop"/>(count) from the largest (1-based;
    /// rank 0 gives 0), or null where the bracket did not hold it.
    /// </summary>
    public float?[] FinishWindow(Func<long, long> rankFromTop)
    {
        var result = new float?[SeriesCount];
        Parallel.For(0, SeriesCount, s =>
        {
            long rank = rankFromTop(_counts[s]);
            if (rank == 0)
            {
                result[s] = 0f;
                return;
            }

            long inWindow = rank - _above[s];
            if (inWindow < 1) return;
            if (_patternCounts[s] is { } counts)
            {
                // From the top pattern down until the wanted rank is reached (null if the bracket holds fewer values).
                for (int i = counts.Length - 1; i >= 0; i--)
                {
                    inWindow -= counts[i];
                    if (inWindow > 0) continue;
                    result[s] = BitConverter.UInt32BitsToSingle(_low![s] + (uint)i);
                    return;
                }

                return;
            }

            if (_overflowed[s] != 0 || inWindow > _window[s].Count) return;
            result[s] = BitConverter.UInt32BitsToSingle(LargestAt(CollectionsMarshal.AsSpan(_window[s]), inWindow));
        });

        foreach (var window in _window) window.Clear();
        return result;
    }

    /// <summary>Takes room for <paramref name="values"/> more kept values; false (and the series is unresolved) once memory is spent.</summary>
    private bool Reserve(int series, int values)
    {
        if (Volatile.Read(ref _overflowed[series]) != 0) return false;
        if (Interlocked.Add(ref _windowRoom, -values) >= 0) return true;
        Volatile.Write(ref _overflowed[series], 1);
        return false;
    }

    internal sealed class SamplePartial(SampledMagnitudeSelector owner)
    {
        public List<uint>[] Values { get; } = [.. Enumerable.Range(0, owner.SeriesCount).Select(_ => new List<uint>())];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Add(int series, ReadOnlySpan<float> values)
        {
            var list = Values[series];
            if (list.Count >= owner.MaxSampleValues) return;
            // Appended in bulk, then the sign bits cleared in place (vectorised).
            int from = list.Count;
            list.AddRange(MemoryMarshal.Cast<float, uint>(values));
            var added = CollectionsMarshal.AsSpan(list)[from..];
            var vectors = MemoryMarshal.Cast<uint, Vector<uint>>(added);
            var mask = new Vector<uint>(MagnitudeMask);
            for (int v = 0; v < vectors.Length; v++) vectors[v] &= mask;
            for (int i = vectors.Length * Vector<uint>.Count; i < added.Length; i++) added[i] &= MagnitudeMask;
        }
    }

    internal sealed class WindowPartial(SampledMagnitudeSelector owner, uint[] low, uint[] high)
    {
        private uint[] _hits = new uint[1024];

        public long[] Counts { get; } = new long[owner.SeriesCount];
        public long[] Above { get; } = new long[owner.SeriesCount];
        public List<uint>[] Window { get; } = [.. Enumerable.Range(0, owner.SeriesCount).Select(_ => new List<uint>())];

        /// <summary>Counts the values of <paramref name="values"/> above the bracket and keeps those inside it (vectorised: few are inside).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Add(int series, ReadOnlySpan<float> values)
        {
            var bits = MemoryMarshal.Cast<float, uint>(values);
            uint lo = low[series], hi = high[series];
            if (_hits.Length < bits.Length) _hits = new uint[bits.Length];
            int hits = 0;
            long above = 0;
            int i = 0;
            if (Vector.IsHardwareAccelerated)
            {
                var mask = new Vector<uint>(MagnitudeMask);
                var vLow = new Vector<uint>(lo);
                var vHigh = new Vector<uint>(hi);
                var aboveLanes = Vector<uint>.Zero; // at most bits.Length / width per lane: no overflow for a chunk
                var vectors = MemoryMarshal.Cast<uint, Vector<uint>>(bits);
                foreach (var v in vectors)
                {
                    var magnitude = v & mask;
                    var isAbove = Vector.GreaterThan(magnitude, vHigh);
                    aboveLanes -= isAbove; // comparison masks are all ones (−1) where true
                    var inside = Vector.GreaterThanOrEqual(magnitude, vLow) & ~isAbove;
                    if (inside == Vector<uint>.Zero) continue;
                    for (int lane = 0; lane < Vector<uint>.Count; lane++)
                        if (inside[lane] != 0) _hits[hits++] = magnitude[lane];
                }

                above = Vector.Sum(aboveLanes);
                i = vectors.Length * Vector<uint>.Count;
            }

            for (; i < bits.Length; i++)
            {
                uint magnitude = bits[i] & MagnitudeMask;
                if (magnitude > hi) above++;
                else if (magnitude >= lo) _hits[hits++] = magnitude;
            }

            Counts[series] += bits.Length;
            Above[series] += above;
            if (hits == 0) return;
            if (owner._patternCounts[series] is { } counts)
            {
                // Shared by every thread (few values fall inside, so contention is rare): memory does not grow with the cores.
                foreach (uint magnitude in _hits.AsSpan(0, hits)) Interlocked.Increment(ref counts[magnitude - lo]);
            }
            else if (owner.Reserve(series, hits))
            {
                Window[series].AddRange(_hits.AsSpan(0, hits));
            }
        }
    }
}
