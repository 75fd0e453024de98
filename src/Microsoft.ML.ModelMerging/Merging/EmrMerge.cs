using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// EMR-Merging (Huang et al. 2024, "EMR-Merging: Tuning-Free High-Performance Model Merging"): one unified task
/// vector plus a mask and a rescaler per task; task t's model is θ0 + λ_t·(M_t ⊙ τ_uni) (task known at inference).
/// </summary>
/// <remarks>
/// Per entry: γ = sign(Σ_i τ_i); τ_uni = γ · max{|τ_i| : τ_i has sign γ} (0 where γ = 0 or no task agrees);
/// M_t = (τ_t ⊙ τ_uni &gt; 0). Over the whole model: λ_t = Σ|τ_t| / Σ|M_t ⊙ τ_uni|, summed over every merged tensor
/// in one statistics pass (the paper's formula; the authors' code sums per-tensor means instead and breaks γ = 0
/// as −1). λ_t = 1 when task t's mask is empty, where any value gives the same weights.
/// The shared <see cref="MergedTensor.Merged"/> is θ0 + τ_uni.
/// </remarks>
public sealed class EmrMerge : MergeMethodBase
{
    private double[] _taskMagnitudes = [];
    private double[] _maskedUnifiedMagnitudes = [];
    private double[]? _scales;

    public static MergeMethodDescriptor Descriptor { get; } = new(
        "emr",
        "EMR-Merging: unified task vector (elected sign, largest agreeing magnitude) plus a mask and a rescaler per task (task known at inference).",
        [],
        _ => new EmrMerge());

    public override string Name => Descriptor.Name;

    public override int StatisticsPassCount => 1;

    public override bool ProducesTaskSpecificWeights => true;

    /// <summary>λ_t per task, once the statistics pass is done.</summary>
    public IReadOnlyList<double>? TaskScales => _scales;

    protected override void OnBegin(int expertCount)
    {
        _taskMagnitudes = new double[expertCount];
        _maskedUnifiedMagnitudes = new double[expertCount];
        _scales = null;
    }

    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var stacked = input.StackTaskVectors();
        int experts = input.ExpertCount;
        input.ForEachSlice(stacked, (_, _, slice) =>
        {
            var (unified, masks) = Unify(slice);
            var taskMagnitudes = PerExpertSum(slice.abs(), experts);
            var maskedUnified = PerExpertSum(unified.abs().unsqueeze(0).mul(masks), experts);
            for (int i = 0; i < experts; i++)
            {
                _taskMagnitudes[i] += taskMagnitudes[i];
                _maskedUnifiedMagnitudes[i] += maskedUnified[i];
            }
        });
    }

    protected override void CompletePass(int pass) =>
        _scales = [.. _taskMagnitudes.Zip(_maskedUnifiedMagnitudes, (task, masked) => masked > 0 ? task / masked : 1.0)];

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var stacked = input.StackTaskVectors();
        var unified = empty(input.Base.shape, dtype: ScalarType.Float32);
        var masks = empty([input.ExpertCount, .. input.Base.shape], dtype: ScalarType.Bool);
        using (var flatUnified = unified.view(-1))
        using (var flatMasks = masks.view(input.ExpertCount, -1))
        {
            // Slice by slice: no [experts, ...]-sized float temporaries.
            input.ForEachSlice(stacked, (start, length, slice) =>
            {
                var (sliceUnified, sliceMasks) = Unify(slice);
                flatUnified.narrow(0, start, length).copy_(sliceUnified);
                flatMasks.narrow(1, start, length).copy_(sliceMasks);
            });
        }

        var taskMasks = masks.unbind(0);
        var merged = input.Base.add(unified);
        var result = new MergedTensor(merged, new TaskSpecificTensor(unified, taskMasks, _scales!));
        scope.MoveToOuter([merged, unified, .. taskMasks]);
        return result;
    }

    /// <summary>τ_uni and the masks M_t (boolean [experts, ...]) of one tensor.</summary>
    private static (Tensor Unified, Tensor Masks) Unify(Tensor stacked)
    {
        var elected = stacked.sum(dim: 0).sign();
        var agreeing = OwnedScalar.With(0, stacked.mul(elected).gt);
        var largestAgreeing = stacked.abs().mul(agreeing).amax([0L]);
        var unified = elected.mul(largestAgreeing);
        var masks = OwnedScalar.With(0, stacked.mul(unified).gt);
        return (unified, masks);
    }

    /// <summary>Σ over every entry of each expert's slice, in float64.</summary>
    private static double[] PerExpertSum(Tensor values, int experts) =>
        values.reshape(experts, values.numel() / experts).sum(1, type: ScalarType.Float64).cpu().data<double>().ToArray();
}
