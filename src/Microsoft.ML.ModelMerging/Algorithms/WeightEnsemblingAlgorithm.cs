using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// WEMoE (and E-WEMoE): every tensor merged by task arithmetic except each block's MLP, which becomes W0 + Σ r_i(x)·τ_i with
/// routers trained by test-time adaptation and routing per sample. The result is the upscaled model (one part).
/// </summary>
internal sealed class WeightEnsemblingAlgorithm : TestTimeAdaptationAlgorithm, IMergeAlgorithm
{
    private readonly bool _efficient;

    private WeightEnsemblingAlgorithm(bool efficient)
        : base(
            efficient ? "e-wemoe" : "wemoe",
            efficient
                ? "E-WEMoE: WEMoE with MLP task vectors pruned per tensor and one router shared by every block."
                : "WEMoE: task arithmetic outside the MLPs; each MLP is W0 + Σ r_i(x)·τ_i with per-sample routers trained by test-time adaptation.",
            TestTimeAdaptationOptions.ForWeightEnsembling().LearningRate,
            [
                MergeParameterSpec.Number("lambda", WeightEnsemblingOptions.DefaultLambda, "task-arithmetic λ of the non-MLP tensors and the routers' initial output"),
                MergeParameterSpec.Integer("router-depth", WeightEnsemblingOptions.DefaultRouterDepth, "router layers: 0, 1 or 2", 0, 2),
                MergeParameterSpec.Choice("batch-reduce", "false", "route on the batch mean of the routing weights (FusionBench's granularity)", "false", "true"),
                MergeParameterSpec.Choice("routing", "linear", "routing weights: the routers' raw outputs (the paper's) or a softmax over the experts (convex combinations of the experts' MLPs)", "linear", "softmax"),
                MergeParameterSpec.Number("task-routing", 0, "weight of a term pulling each task's images to its own expert's MLPs (routing=softmax); 0 = entropy alone, the paper's objective", 0, double.PositiveInfinity),
                .. efficient
                    ? [MergeParameterSpec.Number("keep", WeightEnsemblingOptions.DefaultEfficientKeep, "fraction of every MLP task-vector tensor kept", 0, 1, minimumInclusive: false)]
                    : Array.Empty<MergeParameterSpec>(),
            ])
    {
        _efficient = efficient;
    }

    public static WeightEnsemblingAlgorithm Dense { get; } = new(efficient: false);

    public static WeightEnsemblingAlgorithm Efficient { get; } = new(efficient: true);

    /// <summary>
    /// The declared parameters and the pool's base, and that the task-routing term has the routing it needs: −log of the own
    /// expert's weight is defined only when the weights are a distribution (routing=softmax). Refused here, before any
    /// image is read, rather than when adaptation starts.
    /// </summary>
    public void Check(ExpertPool pool, MergeParameters parameters)
    {
        var resolved = IMergeAlgorithm.CheckDeclared(this, pool, parameters);
        if (resolved.GetNumber("task-routing") > 0 && resolved.GetChoice("routing") != "softmax")
            throw new ArgumentException($"{Name}: task-routing {MergeParameterSpec.FormatNumber(resolved.GetNumber("task-routing"))} needs routing=softmax " +
                "(its term is −log of the weight of each image's own expert, which the raw outputs of linear routing do not make a probability).");
    }

    /// <summary>The WEMoE construction of <paramref name="parameters"/> (resolved against this algorithm).</summary>
    public WeightEnsemblingOptions Options(ResolvedMergeParameters parameters)
    {
        var options = _efficient ? WeightEnsemblingOptions.Efficient(parameters.GetNumber("keep")) : new WeightEnsemblingOptions();
        return options with
        {
            Lambda = parameters.GetNumber("lambda"),
            RouterDepth = (int)parameters.GetInteger("router-depth"),
            BatchReduce = parameters.GetChoice("batch-reduce") == "true",
            SoftmaxRouting = parameters.GetChoice("routing") == "softmax",
            Seed = parameters.GetInteger("seed"),
        };
    }

    /// <summary>
    /// The paper's settings (raw routing weights, entropy alone, lr 1e-4) and softmax routing with the task-routing term at
    /// lr 1e-2, which keeps entropy minimisation from settling on a confident mixture of the wrong experts.
    /// </summary>
    public override IReadOnlyList<IReadOnlyDictionary<string, string>> ComparisonSettings { get; } =
    [
        new Dictionary<string, string>(),
        new Dictionary<string, string> { ["routing"] = "softmax", ["task-routing"] = "1", ["learning-rate"] = "0.01" },
    ];

    protected override TestTimeAdaptationOptions AdaptationOptions(ResolvedMergeParameters parameters, TestTimeAdaptationOptions shared) =>
        shared with { TaskRoutingWeight = parameters.GetNumber("task-routing") };

    protected override MultiTaskModel Adapt(ExpertPool pool, ResolvedMergeParameters parameters, IReadOnlyList<AdaptationTask> tasks,
        IReadOnlyList<OnnxTaskHead> heads, VitOnnxExportOptions exportOptions, Action<IAdaptableModel> adapt)
    {
        var moe = WeightEnsemblingMoE.Create(pool.Config, pool.Pretrained, pool.Experts, Options(parameters));
        try
        {
            adapt(moe);
            return new MultiTaskModel([new MultiTaskModelPart(new WeightEnsemblingOnnxExporter(moe, heads, exportOptions))], [moe]);
        }
        catch
        {
            moe.Dispose();
            throw;
        }
    }
}
