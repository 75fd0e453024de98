using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// One task of a test-time adaptation run: its unlabeled images [N,C,H,W] (pixels in [0,1]) and its classification
/// head, which stays frozen. The caller keeps owning both. <paramref name="Expert"/> is the index of the task's own expert
/// in a routed model (needed only with <see cref="TestTimeAdaptationOptions.TaskRoutingWeight"/>).
/// </summary>
internal sealed record AdaptationTask(string Name, Tensor Images, ClassificationHead Head, int? Expert = null);

/// <summary>A model that routes each image to a mixture of experts and can report the routing weights it used.</summary>
internal interface IRoutedModel
{
    /// <summary>Number of experts the routing weights are over.</summary>
    int ExpertCount { get; }

    /// <summary>True when each block's routing weights are a distribution over the experts (non-negative, summing to 1).</summary>
    bool RoutesByDistribution { get; }

    /// <summary>Features [B, FeatureDim] and the routing weights of every block, [Blocks, B, ExpertCount], differentiable.</summary>
    (Tensor Features, Tensor Routing) ForwardWithRouting(Tensor images);
}

/// <summary>Reported after every adaptation step.</summary>
/// <param name="Step">Steps completed so far, counting steps of the run being resumed.</param>
/// <param name="TotalSteps">Steps of the whole run.</param>
/// <param name="Loss">Sum over tasks of the mean prediction entropy of this step's batches (before the update).</param>
/// <param name="TaskEntropies">The mean entropy per task, in task order.</param>
/// <param name="LearningRate">The rate used by this step.</param>
/// <param name="CheckpointWritten">True when a checkpoint was written after this step.</param>
public sealed record AdaptationProgress(int Step, int TotalSteps, double Loss, IReadOnlyList<double> TaskEntropies, double LearningRate, bool CheckpointWritten);

/// <summary>What <see cref="TestTimeAdaptation.Run"/> did.</summary>
/// <param name="StartStep">Steps already done when the run started (0, or the resumed checkpoint's step).</param>
/// <param name="TotalSteps">Steps completed at the end (= the options' step count).</param>
/// <param name="Losses">The loss of every step run by this call, in order.</param>
internal sealed record AdaptationResult(int StartStep, int TotalSteps, IReadOnlyList<double> Losses)
{
    /// <summary>Loss of the last step run by this call, NaN when none ran.</summary>
    public double FinalLoss => Losses.Count > 0 ? Losses[^1] : double.NaN;
}
