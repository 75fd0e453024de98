using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// TALL masks (Wang et al. 2024, "Localizing Task Information for Improved Model Merging and Compression"): store
/// the multi-task vector τ_MTL = Σ_i τ_i once plus one binary mask per task, m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|, and
/// rebuild task t's model as θ_t = θ0 + m_t ⊙ τ_MTL when the task is known at inference.
/// </summary>
/// <remarks>
/// The shared <see cref="MergedTensor.Merged"/> is task arithmetic, θ0 + λ·τ_MTL, for when the task is unknown.
/// The paper picks λ_t per task on validation data from {0.2, …, 0.6}; give one value or one per task. The comparison
/// is ≥ as in the paper (the authors' code uses &gt;); λ_t·|τ_MTL − τ_t| is computed in float32.
/// </remarks>
public sealed class TallMasksMerge : MergeMethodBase
{
    public const double DefaultLambda = 0.3;
    public const double DefaultTallLambda = 0.4;

    public TallMasksMerge(double lambda = DefaultLambda, IReadOnlyList<double>? tallLambdas = null)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        Lambda = lambda;
        TallLambdas = ValidateTallLambdas(tallLambdas);
    }

    internal static MergeParameterSpec TallLambdaParameter { get; } = MergeParameterSpec.NumberPerExpert(
        "tall-lambda", DefaultTallLambda, "λ_t of the masks m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|", 0);

    public static MergeMethodDescriptor Descriptor { get; } = new(
        "tall-masks",
        "TALL masks: shared τ_MTL = Σ τ_i plus a mask per task; task t's model is θ0 + m_t ⊙ τ_MTL (task known at inference).",
        [
            MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the task-agnostic model θ0 + λ·τ_MTL"),
            TallLambdaParameter,
        ],
        parameters => new TallMasksMerge(parameters.GetNumber("lambda"), parameters.GetNumberPerExpert("tall-lambda")));

    public override string Name => Descriptor.Name;

    public override bool ProducesTaskSpecificWeights => true;

    public double Lambda { get; }

    /// <summary>λ_t: one value for every task or one per task.</summary>
    public IReadOnlyList<double> TallLambdas { get; }

    /// <summary>m_t for every task, boolean [experts, ...].</summary>
    internal static Tensor TaskMasks(MergeTensorInput input, Tensor stacked, Tensor multiTask, IReadOnlyList<double> tallLambdas)
    {
        var perTask = tallLambdas.Count == 1
            ? Enumerable.Repeat((float)tallLambdas[0], input.ExpertCount).ToArray()
            : tallLambdas.Select(value => (float)value).ToArray();
        var othersMagnitude = multiTask.unsqueeze(0).sub(stacked).abs();
        using var lambdas = tensor(perTask, device: stacked.device);
        using var perExpert = lambdas.reshape([input.ExpertCount, .. Enumerable.Repeat(1L, (int)stacked.dim() - 1)]);
        return stacked.abs().ge(othersMagnitude.mul(perExpert));
    }

    internal static IReadOnlyList<double> ValidateTallLambdas(IReadOnlyList<double>? tallLambdas)
    {
        if (tallLambdas is null)
        {
            return [DefaultTallLambda];
        }

        if (tallLambdas.Count == 0 || tallLambdas.Any(value => !(value >= 0) || !double.IsFinite(value)))
        {
            throw new ArgumentException("tall-lambda needs one or more finite values ≥ 0.", nameof(tallLambdas));
        }

        return [.. tallLambdas];
    }

    internal static void EnsureTallLambdaCount(string methodName, IReadOnlyList<double> tallLambdas, int expertCount)
    {
        if (tallLambdas.Count != 1 && tallLambdas.Count != expertCount)
        {
            throw new ArgumentException(
                $"Merge method '{methodName}': tall-lambda has {tallLambdas.Count} values for {expertCount} expert(s); give one value or one per expert.");
        }
    }

    protected override void OnBegin(int expertCount) => EnsureTallLambdaCount(Name, TallLambdas, expertCount);

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var stacked = input.StackTaskVectors();
        var multiTask = stacked.sum(dim: 0);
        // The masks slice by slice: no [experts, ...]-sized float temporaries.
        var allMasks = empty([input.ExpertCount, .. input.Base.shape], dtype: ScalarType.Bool);
        using (var flatMasks = allMasks.view(input.ExpertCount, -1))
        using (var flatMultiTask = multiTask.view(-1))
        {
            input.ForEachSlice(stacked, (start, length, slice) =>
                flatMasks.narrow(1, start, length).copy_(TaskMasks(input, slice, flatMultiTask.narrow(0, start, length), TallLambdas)));
        }

        var masks = allMasks.unbind(0);
        var merged = input.Base.add(OwnedScalar.With(Lambda, multiTask.mul));
        var taskSpecific = new TaskSpecificTensor(multiTask, masks, [.. Enumerable.Repeat(1.0, input.ExpertCount)]);
        var result = new MergedTensor(merged, taskSpecific);
        scope.MoveToOuter([merged, multiTask, .. masks]);
        return result;
    }
}
