using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>AdaMerging: θ = θ0 + Σ λ_i τ_i with coefficients per task (or per task per tensor) learned by test-time adaptation.</summary>
internal sealed class AdaMergingAlgorithm : TestTimeAdaptationAlgorithm
{
    private readonly AdaMergingGranularity _granularity;

    private AdaMergingAlgorithm(AdaMergingGranularity granularity)
        : base(
            granularity == AdaMergingGranularity.TaskWise ? "adamerging-task" : "adamerging-layer",
            granularity == AdaMergingGranularity.TaskWise
                ? "AdaMerging, task-wise: θ0 + Σ λ_i τ_i, one λ per task learned by test-time adaptation."
                : "AdaMerging, layer-wise: one λ per task per tensor learned by test-time adaptation.",
            TestTimeAdaptationOptions.ForAdaMerging().LearningRate,
            [
                MergeParameterSpec.Number("lambda", AdaMergingOptions.DefaultInitialLambda, "initial coefficient of every task vector"),
                MergeParameterSpec.Choice("clamp", "true", "merge with every coefficient clamped to [0, 1], as AdaMerging's code does", "true", "false"),
            ])
    {
        _granularity = granularity;
    }

    public static AdaMergingAlgorithm TaskWise { get; } = new(AdaMergingGranularity.TaskWise);

    public static AdaMergingAlgorithm LayerWise { get; } = new(AdaMergingGranularity.LayerWise);

    protected override MultiTaskModel Adapt(ExpertPool pool, ResolvedMergeParameters parameters, IReadOnlyList<AdaptationTask> tasks,
        IReadOnlyList<OnnxTaskHead> heads, VitOnnxExportOptions exportOptions, Action<IAdaptableModel> adapt)
    {
        using var ada = AdaMerging.Create(pool.Config, pool.Pretrained, pool.Experts,
            new AdaMergingOptions
            {
                Granularity = _granularity,
                InitialLambda = parameters.GetNumber("lambda"),
                ClampCoefficients = parameters.GetChoice("clamp") == "true",
            });
        adapt(ada);
        return MultiTaskModel.Dense(pool.Config, ada.MergedWeights(), heads, exportOptions);
    }
}
