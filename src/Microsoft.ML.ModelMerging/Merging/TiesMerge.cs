using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// TIES-Merging (Yadav et al. 2023), FusionBench semantics by default: trim, elect sign, disjoint merge.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Trim: each task keeps the entries with |τ_i| ≥ its threshold (<see cref="MagnitudePruning"/>'s rule with
/// fraction <see cref="Keep"/>), over the whole model (<see cref="TiesTrimScope.Global"/>, exact, found in two
/// statistics passes) or per tensor (<see cref="TiesTrimScope.PerTensor"/>).</item>
/// <item>Elect: γ = sign(Σ_i trimmed τ_i) per entry. Entries where γ = 0 take the majority sign sign(Σ γ), where
/// Σ γ runs over the same scope as the trim: every entry of every merged tensor for global (a third statistics pass,
/// as FusionBench's flattened model vector), the entries of the tensor for per-tensor. A majority of exactly 0 counts
/// as +1.</item>
/// <item>Disjoint merge over entries whose trimmed τ_i has sign γ: their sum, or their mean over the non-zero
/// agreeing entries (count at least 1). θ = θ0 + λ·merged.</item>
/// </list>
/// </remarks>
public sealed class TiesMerge : MergeMethodBase
{
    public const double DefaultLambda = 0.3;
    public const double DefaultKeep = 0.2;

    private const int CoarseThresholdPass = 0;
    private const int FineThresholdPass = 1;
    private const int MajoritySignPass = 2;

    private ExactMagnitudeSelector? _selector;
    private float[]? _globalThresholds;
    private long _globalSignBalance;
    private float _globalMajoritySign;

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

    public static MergeMethodDescriptor Descriptor { get; } = new(
        "ties",
        "TIES-Merging: trim each task vector to its largest entries, elect a sign per entry, merge the agreeing entries; θ = θ0 + λ·merged.",
        Parameters,
        parameters => new TiesMerge(
            parameters.GetNumber("lambda"),
            parameters.GetNumber("keep"),
            ParseTrim(parameters.GetChoice("trim")),
            ParseMergeFunction(parameters.GetChoice("merge-func"))));

    public override string Name => Descriptor.Name;

    public override int StatisticsPassCount => Trim == TiesTrimScope.Global ? 3 : 0;

    public double Lambda { get; }

    public double Keep { get; }

    public TiesTrimScope Trim { get; }

    public TiesMergeFunction MergeFunction { get; }

    /// <summary>Each task's global trim threshold, once the statistics passes are done (global trim only).</summary>
    public IReadOnlyList<float>? GlobalThresholds => _globalThresholds;

    internal static TiesTrimScope ParseTrim(string text) =>
        text == "per-tensor" ? TiesTrimScope.PerTensor : TiesTrimScope.Global;

    internal static TiesMergeFunction ParseMergeFunction(string text) =>
        text == "mean" ? TiesMergeFunction.Mean : TiesMergeFunction.Sum;

    protected override void OnBegin(int expertCount)
    {
        _selector?.Dispose();
        _selector = Trim == TiesTrimScope.Global ? new ExactMagnitudeSelector(expertCount) : null;
        _globalThresholds = null;
        _globalSignBalance = 0;
        _globalMajoritySign = 1;
    }

    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        switch (pass)
        {
            case CoarseThresholdPass:
            {
                using var stacked = input.StackTaskVectors();
                _selector!.AccumulateCoarse(stacked);
                break;
            }

            case FineThresholdPass:
            {
                using var stacked = input.StackTaskVectors();
                _selector!.AccumulateFine(stacked);
                break;
            }

            case MajoritySignPass:
            {
                using var trimmed = Trimmed(input);
                using var elected = ElectedSigns(trimmed);
                _globalSignBalance += SignBalance(elected);
                break;
            }
        }
    }

    protected override void CompletePass(int pass)
    {
        switch (pass)
        {
            case CoarseThresholdPass:
                _selector!.FinishCoarse([.. _selector.Counts.Select(count => MagnitudePruning.ThresholdRank(count, Keep))]);
                break;
            case FineThresholdPass:
                _globalThresholds = [.. _selector!.FinishFine()];
                _selector.Dispose();
                _selector = null;
                break;
            case MajoritySignPass:
                _globalMajoritySign = _globalSignBalance >= 0 ? 1 : -1;
                break;
        }
    }

    // Intermediates are [experts, ...] or tensor-sized: each is freed as soon as it has been used, so a streaming merge
    // holds a few tensor-sized buffers at a time rather than every step's result.
    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var trimmed = Trimmed(input);
        var elected = ElectedSigns(trimmed);
        float majoritySign = Trim == TiesTrimScope.Global ? _globalMajoritySign : (SignBalance(elected) >= 0 ? 1 : -1);
        using (var zero = elected.eq(0))
        {
            elected.masked_fill_(zero, majoritySign);
        }

        // τ·γ > 0 with γ = ±1 (exact, τ finite) is "τ > 0 where γ = +1, τ < 0 where γ = −1": boolean masks instead of a
        // float product the size of every task vector.
        Tensor agreeing;
        using (var positive = trimmed.gt(0))
        using (var negative = trimmed.lt(0))
        using (var electedPositive = elected.gt(0))
        {
            agreeing = where(electedPositive, positive, negative);
        }

        elected.Dispose();
        trimmed.mul_(agreeing); // the agreeing entries of the trimmed task vectors
        var merged = trimmed.sum(dim: 0);
        trimmed.Dispose();
        if (MergeFunction == TiesMergeFunction.Mean)
        {
            using var count = agreeing.sum(dim: 0);
            using var atLeastOne = count.clamp_min(1);
            var mean = merged.div(atLeastOne);
            merged.Dispose();
            merged = mean;
        }

        agreeing.Dispose();
        merged.mul_(Lambda);
        merged.add_(input.Base); // λ·merged + θ0 = θ0 + λ·merged exactly
        return new MergedTensor(merged.MoveToOuterDisposeScope());
    }

    /// <summary>The trimmed task vectors [experts, ...]: entries with |τ_i| below task i's threshold set to 0.</summary>
    private Tensor Trimmed(MergeTensorInput input)
    {
        using var stacked = input.StackTaskVectors();
        using var thresholds = Trim == TiesTrimScope.Global
            ? tensor(_globalThresholds!, device: stacked.device)
            : MagnitudePruning.RowThresholds(stacked, Keep);
        using var perExpert = input.PerExpert(thresholds);
        using var negativeThresholds = perExpert.neg();

        // |τ| ≥ t (t ≥ 0, τ finite) is τ ≥ t or τ ≤ −t: two boolean masks instead of a float |τ| of every task vector.
        using var atOrAbove = stacked.ge(perExpert);
        using var atOrBelow = stacked.le(negativeThresholds);
        atOrAbove.logical_or_(atOrBelow);
        return stacked.mul(atOrAbove);
    }

    /// <summary>γ = sign(Σ_i trimmed τ_i).</summary>
    private static Tensor ElectedSigns(Tensor trimmed)
    {
        using var sum = trimmed.sum(dim: 0);
        return sum.sign();
    }

    /// <summary>(number of +1) − (number of −1), exact as an integer count.</summary>
    private static long SignBalance(Tensor signs)
    {
        using var isPositive = signs.gt(0);
        using var isNegative = signs.lt(0);
        using var positive = isPositive.sum();
        using var negative = isNegative.sum();
        return positive.item<long>() - negative.item<long>();
    }
}
