using System.Runtime.InteropServices;
using System.Runtime.CompilerServices;
using System.Numerics;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// TIES-Merging (Yadav et al. 2023), FusionBench semantics by default: trim, elect sign, disjoint merge.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Trim: each task keeps the entries with |τ_i| ≥ its threshold (<see cref="MagnitudePruning"/>'s rule with
/// fraction <see cref="Keep"/>), over the whole model (<see cref="TiesTrimScope.Global"/>, exact: a sample of the
/// model brackets each threshold and one full pass pins it (<see cref="SampledMagnitudeSelector"/>); should the
/// bracket miss, two counting passes find it (<see cref="ExactMagnitudeSelector"/>)) or per tensor
/// (<see cref="TiesTrimScope.PerTensor"/>).</item>
/// <item>Elect: γ = sign(Σ_i trimmed τ_i) per entry. Entries where γ = 0 take the majority sign sign(Σ γ), where
/// Σ γ runs over the same scope as the trim: every entry of every merged tensor for global (a statistics pass of its own,
/// as FusionBench's flattened model vector; the streaming driver folds it into the merge and patches the entries it
/// decides afterwards), the entries of the tensor for per-tensor. A majority of exactly 0 counts
/// as +1.</item>
/// <item>Disjoint merge over entries whose trimmed τ_i has sign γ: their sum, or their mean over the non-zero
/// agreeing entries (count at least 1). θ = θ0 + λ·merged.</item>
/// </list>
/// </remarks>
public sealed class TiesMerge : MergeMethodBase, IElementwiseMergeMethod, ITensorwiseMergeMethod
{
    /// <summary>Default λ, 0.3.</summary>
    public const double DefaultLambda = 0.3;
    /// <summary>Default fraction of each task vector kept by the trim, 0.2.</summary>
    public const double DefaultKeep = 0.2;

    private const int SamplePass = 0;
    private const int BracketPass = 1;
    private const int CoarseThresholdPass = 2;
    private const int FineThresholdPass = 3;
    private const int MajoritySignPass = 4;


    private SampledMagnitudeSelector? _sampled;
    private ExactMagnitudeSelector? _selector;
    private float[]? _globalThresholds;
    private long _globalSignBalance;
    private float _globalMajoritySign;
    private bool _finishedMajority;

    /// <summary>Creates TIES with its settings.</summary>
    /// <param name="lambda">λ scaling the merged task vector; finite.</param>
    /// <param name="keep">Fraction of each task vector's largest-magnitude entries kept, in (0, 1].</param>
    /// <param name="trim">Threshold over the whole model (default) or per tensor.</param>
    /// <param name="mergeFunction">Sum (default) or mean of the agreeing entries.</param>
    public TiesMerge(
        double lambda = DefaultLambda,
        double keep = DefaultKeep,
        TiesTrimScope trim = TiesTrimScope.Global,
        TiesMergeFunction mergeFunction = TiesMergeFunction.Sum)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        MagnitudePruning.EnsureKeepFraction(keep);
        Lambda = lambda;
        Keep = keep;
        Trim = trim;
        MergeFunction = mergeFunction;
    }

    /// <summary>TIES's declared parameters (DARE reuses them).</summary>
    internal static IReadOnlyList<MergeParameterSpec> Parameters { get; } =
    [
        MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the merged task vector"),
        MergeParameterSpec.Number("keep", DefaultKeep, "fraction of each task vector's largest-magnitude entries kept by the trim", 0, 1, minimumInclusive: false),
        MergeParameterSpec.Choice("trim", "global", "threshold over the whole model (FusionBench) or per tensor (mergekit)", "global", "per-tensor"),
        MergeParameterSpec.Choice("merge-func", "sum", "how agreeing entries combine", "sum", "mean"),
    ];

    /// <summary>The registry entry: name <c>ties</c>, parameters <c>lambda</c>, <c>keep</c>, <c>trim</c> and <c>merge-func</c>.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "ties",
        "TIES-Merging: trim each task vector to its largest entries, elect a sign per entry, merge the agreeing entries; θ = θ0 + λ·merged.",
        Parameters,
        parameters => new TiesMerge(
            parameters.GetNumber("lambda"),
            parameters.GetNumber("keep"),
            ParseTrim(parameters.GetChoice("trim")),
            ParseMergeFunction(parameters.GetChoice("merge-func"))));

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <inheritdoc/>
    /// <remarks>Five with the global trim (sample, bracket, two counting passes run only when needed, majority sign); none per tensor.</remarks>
    public override int StatisticsPassCount => Trim == TiesTrimScope.Global ? 5 : 0;

    /// <summary>The counting passes run only for thresholds the sampled bracket did not pin.</summary>
    public override bool NeedsPass(int pass) => pass is not (CoarseThresholdPass or FineThresholdPass) || _globalThresholds is null;

    /// <summary>λ scaling the merged task vector.</summary>
    public double Lambda { get; }

    /// <summary>Fraction of each task vector's largest-magnitude entries kept by the trim.</summary>
    public double Keep { get; }

    /// <summary>Whether the trim threshold is taken over the whole model or per tensor.</summary>
    public TiesTrimScope Trim { get; }

    /// <summary>How agreeing entries combine: sum or mean.</summary>
    public TiesMergeFunction MergeFunction { get; }

    /// <summary>Chunks the streaming driver samples to bracket the global thresholds (64: 2^21 values per task).</summary>
    internal int SampledChunkCount { get; init; } = 64;

    /// <summary>Most |τ| values kept inside the brackets, over all tasks (2^24: 64 MiB); past that the counting passes run.</summary>
    internal long MaxBracketValues { get; init; } = 1 << 24;

    /// <summary>Brackets spanning at most this many float32 bit patterns are counted per pattern rather than kept.</summary>
    internal uint MaxCountedBracketPatterns { get; init; } = SampledMagnitudeSelector.DefaultMaxCountedPatterns;

    /// <summary>How the global thresholds were found (for tests and diagnostics): from the sampled bracket, or by the counting passes.</summary>
    internal string? ThresholdRoute { get; private set; }

    /// <summary>Each task's global trim threshold, once the statistics passes are done (global trim only).</summary>
    public IReadOnlyList<float>? GlobalThresholds => _globalThresholds;

    internal static TiesTrimScope ParseTrim(string text) =>
        text == "per-tensor" ? TiesTrimScope.PerTensor : TiesTrimScope.Global;

    internal static TiesMergeFunction ParseMergeFunction(string text) =>
        text == "mean" ? TiesMergeFunction.Mean : TiesMergeFunction.Sum;

    /// <inheritdoc/>
    protected override void OnBegin(int expertCount)
    {
        _selector?.Dispose();
        _selector = Trim == TiesTrimScope.Global ? new ExactMagnitudeSelector(expertCount) : null;
        _sampled = Trim == TiesTrimScope.Global ? new SampledMagnitudeSelector(expertCount, Keep, maxWindowValues: MaxBracketValues, maxCountedPatterns: MaxCountedBracketPatterns) : null;
        _globalThresholds = null;
        ThresholdRoute = null;
        _globalSignBalance = 0;
        _globalMajoritySign = 1;
        _finishedMajority = false;
    }

    bool IElementwiseMergeMethod.IsElementwise => Trim == TiesTrimScope.Global;

    // The in-memory path runs the streaming driver's chunk kernels over the whole tensor: one implementation, same bits.
    /// <inheritdoc/>
    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        IElementwiseMergeMethod self = this;
        var accumulator = self.CreateAccumulator(pass);
        ElementwiseTensors.Accumulate(accumulator, input);
        self.AddAccumulated(pass, accumulator);
    }

    int? IElementwiseMergeMethod.SampledChunks(int pass) => pass == SamplePass ? SampledChunkCount : null;

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) => pass switch
    {
        SamplePass => new MagnitudeSample(_sampled!.CreateSamplePartial()),
        BracketPass => new MagnitudeBracket(_sampled!.CreateWindowPartial()),
        CoarseThresholdPass or FineThresholdPass => new MagnitudeCounts(_selector!.CreatePartial(), pass == FineThresholdPass),
        MajoritySignPass => new SignBalanceCounter(_globalThresholds!),
        _ => throw new ArgumentOutOfRangeException(nameof(pass), pass, "TIES has five statistics passes."),
    };

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator)
    {
        switch (accumulator)
        {
            case MagnitudeSample sample when pass == SamplePass:
                _sampled!.AddSample(sample.Partial);
                break;
            case MagnitudeBracket bracket when pass == BracketPass:
                _sampled!.AddWindow(bracket.Partial);
                break;
            case MagnitudeCounts counts when pass is CoarseThresholdPass or FineThresholdPass:
                _selector!.AddCounts(counts.Selector);
                break;
            case SignBalanceCounter balance when pass == MajoritySignPass:
                _globalSignBalance += balance.Balance;
                break;
            case DeferredSignMerger balance when pass == MajoritySignPass:
                _globalSignBalance += balance.Balance;
                break;
            default:
                throw new ArgumentException($"Not an accumulator of TIES pass {pass}.", nameof(accumulator));
        }
    }

    /// <inheritdoc/>
    protected override void CompletePass(int pass)
    {
        switch (pass)
        {
            case SamplePass:
                _sampled!.FinishSample();
                break;
            case BracketPass:
                var found = _sampled!.FinishWindow(count => MagnitudePruning.ThresholdRank(count, Keep));
                var counted = Enumerable.Range(0, found.Length).Select(_sampled.IsCounted).ToArray();
                _sampled = null;
                if (found.All(t => t is not null)) _globalThresholds = [.. found.Select(t => t!.Value)];
                ThresholdRoute = _globalThresholds is null ? "counting passes"
                    : counted.All(c => c) ? "bracket counted per bit pattern" : counted.Any(c => c) ? "bracket counted or kept" : "bracket values kept";
                break;
            case CoarseThresholdPass when _globalThresholds is null:
                _selector!.FinishCoarse([.. _selector.Counts.Select(count => MagnitudePruning.ThresholdRank(count, Keep))]);
                break;
            case FineThresholdPass when _globalThresholds is null:
                _globalThresholds = [.. _selector!.FinishFine()];
                _selector.Dispose();
                _selector = null;
                break;
            case MajoritySignPass:
                _globalMajoritySign = _globalSignBalance >= 0 ? 1 : -1;
                _finishedMajority = true;
                break;
        }
    }

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input)
    {
        if (Trim == TiesTrimScope.Global) return new MergedTensor(ElementwiseTensors.Merge(this, input));

        return new MergedTensor(TensorBuffers.Merge(this, input));
    }

    bool ITensorwiseMergeMethod.IsTensorwise => Trim == TiesTrimScope.PerTensor;

    /// <summary>
    /// Per-tensor trim: thresholds and the majority sign are the tensor's own. Small tensors take their thresholds by
    /// sorting, large ones from a sampled bracket in one pass over the buffers (two counting passes should the bracket
    /// miss); then one pass merges while counting the elected signs, and the few entries a negative majority decides are
    /// patched in the output. Every pass views the tensor in place, on every core.
    /// </summary>
    void ITensorwiseMergeMethod.MergeTensor(TensorBuffers tensor, FloatSegments output)
    {
        if (Trim != TiesTrimScope.PerTensor) throw new InvalidOperationException("TIES: only the per-tensor trim merges tensor by tensor.");
        long count = tensor.Count;
        var thresholds = new float[tensor.ExpertCount];
        long rank = MagnitudePruning.ThresholdRank(count, Keep);
        if (rank > 0 && count <= SelectionBySortingLimit)
        {
            thresholds = ThresholdsBySorting(tensor, rank);
        }
        else if (rank > 0 && ThresholdsByBracket(tensor, rank) is { } bracketed)
        {
            thresholds = bracketed;
        }
        else if (rank > 0)
        {
            // The counts are sums, so the thresholds do not depend on the threads.
            using var selector = new ExactMagnitudeSelector(tensor.ExpertCount);
            tensor.ForEachChunk(null, () => new MagnitudeCounts(selector.CreatePartial(), fine: false),
                (MagnitudeCounts partial, in ElementwiseChunk chunk, Span<float> _) => partial.Accumulate(chunk), partial => selector.AddCounts(partial.Selector));
            // An expert lacking the tensor (allow-missing) has no entry here: no threshold, its τ = 0 keeps nothing.
            selector.FinishCoarse([.. Enumerable.Range(0, tensor.ExpertCount).Select(e => tensor.Lacking?[e] == true ? 0 : rank)]);
            tensor.ForEachChunk(null, () => new MagnitudeCounts(selector.CreatePartial(), fine: true),
                (MagnitudeCounts partial, in ElementwiseChunk chunk, Span<float> _) => partial.Accumulate(chunk), partial => selector.AddCounts(partial.Selector));
            thresholds = [.. selector.FinishFine()];
        }

        // The merge pass stands in for the majority-sign pass, as in the global trim: every entry is merged as if the
        // tensor's majority were +1 while the elected signs are counted, and the entries a majority of −1 would change
        // (exact cancellations) are recorded and patched afterwards.
        bool mean = MergeFunction == TiesMergeFunction.Mean;
        float lambda = (float)Lambda;
        long signBalance = 0;
        var patches = new List<(long Index, float Negative)>();
        tensor.ForEachChunk(output, () => new SignDependentEntries(),
            (SignDependentEntries partial, in ElementwiseChunk chunk, Span<float> values) =>
                partial.Balance += MergeAssumingPositiveMajority(chunk, values, thresholds, mean, lambda, partial.Record),
            partial =>
            {
                signBalance += partial.Balance;
                patches.AddRange(partial.Records);
            });
        if (signBalance < 0)
        {
            foreach (var (index, negative) in patches) output.Slice(index, 1)[0] = negative;
        }
    }

    /// <summary>
    /// Up to this many entries a tensor's per-task thresholds come from sorting a copy of its magnitudes: for the many
    /// small tensors of a model (biases, norms) that is far cheaper than the two histogram passes and their 2^16 buckets.
    /// </summary>
    private const long SelectionBySortingLimit = 1 << 16;

    /// <summary>The <paramref name="rank"/>-th largest |τ_i| of each task in a small tensor (0 for an expert lacking it).</summary>
    private static float[] ThresholdsBySorting(TensorBuffers tensor, long rank)
    {
        var thresholds = new float[tensor.ExpertCount];
        var magnitudes = new float[tensor.Count];
        for (int e = 0; e < tensor.ExpertCount; e++)
        {
            if (tensor.Lacking?[e] == true) continue; // no entry in task e's vector: no threshold, its τ = 0 keeps nothing
            var row = tensor.TaskVector(e);
            for (int i = 0; i < magnitudes.Length; i++) magnitudes[i] = MathF.Abs(row[i]);
            Array.Sort(magnitudes);
            thresholds[e] = magnitudes[^(int)rank]; // the rank-th from the top
        }

        return thresholds;
    }

    /// <summary>
    /// A large tensor's exact per-task thresholds in one pass over its values, as the global trim finds its own: a strided
    /// sample of each task's |τ| brackets the wanted magnitude, and one pass counts the values above the bracket and keeps
    /// those inside it (<see cref="SampledMagnitudeSelector"/>). Null when a bracket missed (an unrepresentative sample):
    /// the caller then runs the two counting passes. The thresholds never depend on the sample, only whether one pass finds them.
    /// </summary>
    private float[]? ThresholdsByBracket(TensorBuffers tensor, long rank)
    {
        var sampled = new SampledMagnitudeSelector(tensor.ExpertCount, Keep, maxSampleValues: BracketSampleValues, maxWindowValues: MaxBracketValues,
            maxCountedPatterns: 1 << 14); // small per-tensor pattern counts: a narrower bracket keeps its values instead
        var sample = sampled.CreateSamplePartial();
        var values = new float[BracketSampleValues];
        for (int e = 0; e < tensor.ExpertCount; e++)
        {
            if (tensor.Lacking?[e] == true) continue;
            sample.Add(e, values.AsSpan(0, tensor.SampleTaskVector(e, values)));
        }

        sampled.AddSample(sample);
        sampled.FinishSample();
        tensor.ForEachChunk(null, () => new MagnitudeBracket(sampled.CreateWindowPartial()),
            (MagnitudeBracket partial, in ElementwiseChunk chunk, Span<float> _) => partial.Accumulate(chunk), partial => sampled.AddWindow(partial.Partial));
        // An expert lacking the tensor counted no value: rank 0, threshold 0 (its τ = 0 keeps nothing).
        var found = sampled.FinishWindow(values => values == 0 ? 0 : rank);
        return found.All(t => t is not null) ? [.. found.Select(t => t!.Value)] : null;
    }

    /// <summary>
    /// Values of each task's |τ| a large tensor's bracket is drawn from: runs of consecutive entries spread evenly over the
    /// tensor (cache lines read whole). 2^16 brackets a fifth from the top to about ±1.6% of the entries, so the one pass
    /// keeps few values (2^13 gave ±4.4%, and the pass spent most of its time on the values inside).
    /// </summary>
    private const int BracketSampleValues = 1 << 16;

    /// <summary>One thread's share of a per-tensor merge: its elected-sign balance and the sign-dependent entries it met.</summary>
    private sealed class SignDependentEntries
    {
        public long Balance { get; set; }

        public List<(long Index, float Negative)> Records { get; } = [];

        public void Record(long index, float negative) => Records.Add((index, negative));
    }

    /// <summary>
    /// Global trim, for consecutive entries: per entry, trim each τ_i at its task's threshold, elect γ = sign(Σ trimmed)
    /// (0 takes the global majority sign), combine the trimmed entries of sign γ, θ = θ0 + λ·merged. Vectorised; no
    /// temporaries.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged) =>
        MergeChunk(chunk, merged, _globalThresholds ?? throw new InvalidOperationException("TIES: the statistics passes have not run."),
            _globalMajoritySign > 0, MergeFunction == TiesMergeFunction.Mean, (float)Lambda); // λ: the float32 scalar a float32 tensor op would use

    /// <summary>The merged entries of a chunk for given per-task thresholds and majority sign.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeChunk(in ElementwiseChunk chunk, Span<float> merged, float[] thresholds, bool majorityPositive, bool mean, float lambda)
    {
        int n = chunk.Length;
        int width = Vector<float>.Count;
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var parts = TrimmedParts.Of(chunk, j, thresholds, mean);
            var positive = Vector.GreaterThan(parts.Sum, Vector<float>.Zero);
            var electedPositive = majorityPositive ? positive | Vector.Equals(parts.Sum, Vector<float>.Zero) : positive;
            parts.Merged(electedPositive, mean, lambda, chunk.Base.Slice(j)).CopyTo(merged.Slice(j));
        }

        for (; j < n; j++)
        {
            float sum = TrimmedSum(chunk, j, thresholds);
            merged[j] = MergeScalar(chunk, j, thresholds, sum > 0 || (sum == 0 && majorityPositive), mean, lambda);
        }
    }

    /// <summary>
    /// Global trim: the merge pass stands in for the majority-sign pass. Every entry is merged as if the majority were
    /// +1, the elected signs are counted, and the few entries whose value the majority changes (γ = 0 with trimmed
    /// entries of both signs, i.e. exact cancellation) are recorded with their value for a majority of −1.
    /// </summary>
    DeferredLastPass? IElementwiseMergeMethod.BeginDeferredLastPass(long maxPatches) =>
        Trim == TiesTrimScope.Global && _globalThresholds is not null ? new DeferredMajoritySign(this, maxPatches) : null;

    /// <summary>
    /// What the merge needs of the trimmed τ_i at a vector of entries, from one pass over the experts: their sum (for
    /// the elected sign), the sums of the positive and of the negative ones (the agreeing entries for either sign), and
    /// for the mean their counts. Sums run over the experts in order, as a sum of the agreeing entries alone would.
    /// </summary>
    private readonly struct TrimmedParts
    {
        public Vector<float> Sum { get; private init; }
        public Vector<float> Positive { get; private init; }
        public Vector<float> Negative { get; private init; }
        private Vector<float> PositiveCount { get; init; }
        private Vector<float> NegativeCount { get; init; }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TrimmedParts Of(in ElementwiseChunk chunk, int j, float[] thresholds, bool mean)
        {
            Vector<float> sum = Vector<float>.Zero, positive = Vector<float>.Zero, negative = Vector<float>.Zero;
            Vector<float> positiveCount = Vector<float>.Zero, negativeCount = Vector<float>.Zero;
            for (int e = 0; e < chunk.ExpertCount; e++)
            {
                var trimmed = Trimmed(new Vector<float>(chunk.TaskVector(e).Slice(j)), thresholds[e]);
                sum += trimmed;
                var isPositive = Vector.GreaterThan(trimmed, Vector<float>.Zero);
                var isNegative = Vector.LessThan(trimmed, Vector<float>.Zero);
                positive += Vector.ConditionalSelect(isPositive, trimmed, Vector<float>.Zero);
                negative += Vector.ConditionalSelect(isNegative, trimmed, Vector<float>.Zero);
                if (!mean) continue;
                positiveCount += Vector.ConditionalSelect(isPositive, Vector<float>.One, Vector<float>.Zero);
                negativeCount += Vector.ConditionalSelect(isNegative, Vector<float>.One, Vector<float>.Zero);
            }

            return new TrimmedParts { Sum = sum, Positive = positive, Negative = negative, PositiveCount = positiveCount, NegativeCount = negativeCount };
        }

        /// <summary>θ0 + λ·(the agreeing entries combined) where lanes of <paramref name="electedPositive"/> are +1, else −1.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector<float> Merged(Vector<int> electedPositive, bool mean, float lambda, ReadOnlySpan<float> baseValues)
        {
            var total = Vector.ConditionalSelect(electedPositive, Positive, Negative);
            if (mean) total /= Vector.Max(Vector.ConditionalSelect(electedPositive, PositiveCount, NegativeCount), Vector<float>.One);
            return total * lambda + new Vector<float>(baseValues);
        }
    }

    private static float TrimmedSum(in ElementwiseChunk chunk, int j, float[] thresholds)
    {
        float sum = 0;
        for (int e = 0; e < chunk.ExpertCount; e++) sum += Trimmed(chunk.TaskVector(e)[j], thresholds[e]);
        return sum;
    }

    /// <summary>θ0 + λ·(combined trimmed entries agreeing with the elected sign) for the vector of entries at <paramref name="j"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> MergeVector(in ElementwiseChunk chunk, int j, float[] thresholds, Vector<int> electedPositive, bool mean, float lambda)
    {
        var total = Vector<float>.Zero;
        var count = Vector<float>.Zero;
        for (int e = 0; e < chunk.ExpertCount; e++)
        {
            var trimmed = Trimmed(new Vector<float>(chunk.TaskVector(e).Slice(j)), thresholds[e]);
            var agrees = Vector.ConditionalSelect(electedPositive,
                Vector.GreaterThan(trimmed, Vector<float>.Zero), Vector.LessThan(trimmed, Vector<float>.Zero));
            total += Vector.ConditionalSelect(agrees, trimmed, Vector<float>.Zero);
            if (mean) count += Vector.ConditionalSelect(agrees, Vector<float>.One, Vector<float>.Zero);
        }

        if (mean) total /= Vector.Max(count, Vector<float>.One);
        return total * lambda + new Vector<float>(chunk.Base.Slice(j));
    }

    private static float MergeScalar(in ElementwiseChunk chunk, int j, float[] thresholds, bool positive, bool mean, float lambda)
    {
        float total = 0;
        float count = 0;
        for (int e = 0; e < chunk.ExpertCount; e++)
        {
            float trimmed = Trimmed(chunk.TaskVector(e)[j], thresholds[e]);
            if (positive ? trimmed > 0 : trimmed < 0)
            {
                total += trimmed;
                count++;
            }
        }

        if (mean) total /= Math.Max(count, 1);
        return (total * lambda) + chunk.Base[j];
    }

    /// <summary>τ where |τ| ≥ t, else 0 (+0: a zero that never agrees with either sign).</summary>
    private static Vector<float> Trimmed(Vector<float> values, float threshold) =>
        Vector.ConditionalSelect(Vector.GreaterThanOrEqual(Vector.Abs(values), new Vector<float>(threshold)), values, Vector<float>.Zero);

    private static float Trimmed(float value, float threshold) => Math.Abs(value) >= threshold ? value : 0;

    /// <summary>The sample pass on one thread: |τ_i| of the sampled chunks, per task.</summary>
    private sealed class MagnitudeSample(SampledMagnitudeSelector.SamplePartial partial) : IChunkAccumulator
    {
        public SampledMagnitudeSelector.SamplePartial Partial { get; } = partial;

        public void Accumulate(in ElementwiseChunk chunk)
        {
            for (int e = 0; e < chunk.ExpertCount; e++)
                if (!chunk.Lacks(e)) Partial.Add(e, chunk.TaskVector(e));
        }
    }

    /// <summary>The full pass of the sampled bracket on one thread: per task, |τ_i| above it counted, inside it kept.</summary>
    private sealed class MagnitudeBracket(SampledMagnitudeSelector.WindowPartial partial) : IChunkAccumulator
    {
        public SampledMagnitudeSelector.WindowPartial Partial { get; } = partial;

        public void Accumulate(in ElementwiseChunk chunk)
        {
            for (int e = 0; e < chunk.ExpertCount; e++)
                if (!chunk.Lacks(e)) Partial.Add(e, chunk.TaskVector(e));
        }
    }

    /// <summary>The counting passes of the exact global thresholds on one thread (the fallback): |τ_i| counted per task.</summary>
    private sealed class MagnitudeCounts(ExactMagnitudeSelector selector, bool fine) : IChunkAccumulator
    {
        public ExactMagnitudeSelector Selector { get; } = selector;

        public void Accumulate(in ElementwiseChunk chunk)
        {
            for (int e = 0; e < chunk.ExpertCount; e++)
            {
                if (chunk.Lacks(e)) continue; // not part of task e's vector
                if (fine) Selector.AccumulateFine(e, chunk.TaskVector(e));
                else Selector.AccumulateCoarse(e, chunk.TaskVector(e));
            }
        }
    }

    /// <summary>Pass 3 on one thread: (number of γ = +1) − (number of γ = −1) over the trimmed task vectors.</summary>
    private sealed class SignBalanceCounter(float[] thresholds) : IChunkAccumulator
    {
        public long Balance { get; private set; }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Accumulate(in ElementwiseChunk chunk)
        {
            int n = chunk.Length;
            int width = Vector<float>.Count;
            var lanes = Vector<int>.Zero; // at most n / width per lane: no overflow for a chunk
            int j = 0;
            for (; j + width <= n; j += width)
            {
                var sum = Vector<float>.Zero;
                for (int e = 0; e < chunk.ExpertCount; e++)
                    sum += Trimmed(new Vector<float>(chunk.TaskVector(e).Slice(j)), thresholds[e]);

                // Comparison masks are −1 where true: negative minus positive is +1 per γ = +1, −1 per γ = −1.
                lanes += Vector.LessThan(sum, Vector<float>.Zero) - Vector.GreaterThan(sum, Vector<float>.Zero);
            }

            long balance = 0;
            for (int lane = 0; lane < Vector<int>.Count; lane++) balance += lanes[lane];
            for (; j < n; j++)
            {
                float sum = 0;
                for (int e = 0; e < chunk.ExpertCount; e++) sum += Trimmed(chunk.TaskVector(e)[j], thresholds[e]);
                balance += sum > 0 ? 1 : sum < 0 ? -1 : 0;
            }

            Balance += balance;
        }
    }

    /// <summary>
    /// Merges a chunk as if the majority sign were +1 and returns the balance of its elected signs ((number of γ = +1) −
    /// (number of γ = −1)); <paramref name="record"/> receives (index in the tensor, value for a majority of −1) of every
    /// entry the majority decides (γ = 0 with kept entries of both signs, which cancel exactly).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long MergeAssumingPositiveMajority(in ElementwiseChunk chunk, Span<float> merged, float[] thresholds, bool mean, float lambda, Action<long, float> record)
    {
        int n = chunk.Length;
        long start = chunk.Start;
        int width = Vector<float>.Count;
        var lanes = Vector<int>.Zero; // at most n / width per lane: no overflow for a chunk
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var parts = TrimmedParts.Of(chunk, j, thresholds, mean);
            var zero = Vector.Equals(parts.Sum, Vector<float>.Zero);
            var positive = Vector.GreaterThan(parts.Sum, Vector<float>.Zero);
            // Comparison masks are −1 where true: negative minus positive is +1 per γ = +1, −1 per γ = −1.
            lanes += Vector.LessThan(parts.Sum, Vector<float>.Zero) - positive;
            var baseValues = chunk.Base.Slice(j);
            parts.Merged(positive | zero, mean, lambda, baseValues).CopyTo(merged.Slice(j));
            // Kept entries of both signs that cancel exactly: the value depends on the majority.
            var dependent = zero & ~Vector.Equals(parts.Positive, Vector<float>.Zero) & ~Vector.Equals(parts.Negative, Vector<float>.Zero);
            if (dependent == Vector<int>.Zero) continue;
            var negative = parts.Merged(positive, mean, lambda, baseValues);
            for (int lane = 0; lane < width; lane++)
                if (dependent[lane] != 0) record(start + j + lane, negative[lane]);
        }

        long balance = 0;
        for (int lane = 0; lane < Vector<int>.Count; lane++) balance += lanes[lane];
        for (; j < n; j++)
        {
            float sum = TrimmedSum(chunk, j, thresholds);
            balance += sum > 0 ? 1 : sum < 0 ? -1 : 0;
            merged[j] = MergeScalar(chunk, j, thresholds, sum >= 0, mean, lambda);
            if (sum != 0) continue;
            float negative = MergeScalar(chunk, j, thresholds, false, mean, lambda);
            if (BitConverter.SingleToInt32Bits(negative) != BitConverter.SingleToInt32Bits(merged[j])) record(start + j, negative);
        }

        return balance;
    }

    /// <summary>The merge pass standing in for the majority-sign pass (<see cref="IElementwiseMergeMethod.BeginDeferredLastPass"/>).</summary>
    private sealed class DeferredMajoritySign(TiesMerge owner, long maxPatches) : DeferredLastPass
    {
        private long _recorded;
        private int _overflowed;

        public TiesMerge Owner { get; } = owner;

        public override bool Overflowed => Volatile.Read(ref _overflowed) != 0;

        public override IDeferredChunkMerger CreateWorker() => new DeferredSignMerger(this);

        /// <summary>Room for one more record, or false (and overflowed) once <c>maxPatches</c> are taken.</summary>
        public bool Reserve()
        {
            if (Interlocked.Increment(ref _recorded) <= maxPatches) return true;
            Volatile.Write(ref _overflowed, 1);
            return false;
        }

        public override IEnumerable<(int Tensor, long Index, float Value)> Patches(IEnumerable<IDeferredChunkMerger> workers)
        {
            if (Overflowed) throw new InvalidOperationException("TIES: too many entries depended on the majority sign; the merge must be run again.");
            if (!Owner._finishedMajority) throw new InvalidOperationException("TIES: the majority-sign pass is not finished.");
            // The output holds the values for a majority of +1; only a majority of −1 changes the recorded entries.
            if (Owner._globalMajoritySign > 0) return [];
            return workers.Cast<DeferredSignMerger>().SelectMany(w => w.Records).Select(r => (r.Tensor, r.Index, r.Negative));
        }
    }

    /// <summary>One thread of <see cref="DeferredMajoritySign"/>: merges chunks, counts elected signs, records sign-dependent entries.</summary>
    private sealed class DeferredSignMerger(DeferredMajoritySign shared) : IDeferredChunkMerger
    {
        public long Balance { get; private set; }

        public List<(int Tensor, long Index, float Negative)> Records { get; } = [];

        public void Accumulate(in ElementwiseChunk chunk) =>
            throw new InvalidOperationException("TIES: a deferred majority-sign pass gathers its statistics while merging.");

        public void MergeChunk(in ElementwiseChunk chunk, Span<float> merged, int tensor, long start)
        {
            var owner = shared.Owner;
            var thresholds = owner._globalThresholds ?? throw new InvalidOperationException("TIES: the statistics passes have not run.");
            Balance += MergeAssumingPositiveMajority(chunk, merged, thresholds, owner.MergeFunction == TiesMergeFunction.Mean,
                (float)owner.Lambda, (index, negative) => Record(tensor, index, negative));
        }

        private void Record(int tensor, long index, float negative)
        {
            if (shared.Reserve()) Records.Add((tensor, index, negative));
        }
    }
}
