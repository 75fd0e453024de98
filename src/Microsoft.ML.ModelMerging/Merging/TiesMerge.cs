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
        var stacked = input.StackTaskVectors();
        switch (pass)
        {
            case CoarseThresholdPass:
                _selector!.AccumulateCoarse(stacked);
                break;
            case FineThresholdPass:
                _selector!.AccumulateFine(stacked);
                break;
            case MajoritySignPass:
                var elected = TrimmedSum(input, stacked, out _).sign();
                _globalSignBalance += SignBalance(elected);
                break;
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

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var stacked = input.StackTaskVectors();
        var elected = TrimmedSum(input, stacked, out var trimmed).sign();
        float majoritySign = Trim == TiesTrimScope.Global ? _globalMajoritySign : (SignBalance(elected) >= 0 ? 1 : -1);
        elected = elected.masked_fill(elected.eq(0), majoritySign);

        var agreeing = trimmed.mul(elected).gt(0);
        var merged = trimmed.mul(agreeing).sum(dim: 0);
        if (MergeFunction == TiesMergeFunction.Mean)
        {
            merged = merged.div(agreeing.sum(dim: 0).clamp_min(1));
        }

        return new MergedTensor(input.Base.add(merged.mul(Lambda)).MoveToOuterDisposeScope());
    }

    /// <summary>Σ_i trimmed τ_i; <paramref name="trimmed"/> gets the trimmed task vectors [experts, ...].</summary>
    private Tensor TrimmedSum(MergeTensorInput input, Tensor stacked, out Tensor trimmed)
    {
        var thresholds = Trim == TiesTrimScope.Global
            ? tensor(_globalThresholds!, device: stacked.device)
            : MagnitudePruning.RowThresholds(stacked, Keep);
        trimmed = stacked.mul(stacked.abs().ge(input.PerExpert(thresholds)));
        return trimmed.sum(dim: 0);
    }

    /// <summary>(number of +1) − (number of −1), exact as an integer count.</summary>
    private static long SignBalance(Tensor signs)
    {
        using var positive = signs.gt(0).sum();
        using var negative = signs.lt(0).sum();
        return positive.item<long>() - negative.item<long>();
    }
}
