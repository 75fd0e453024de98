using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>What a merge method returns for one tensor; owns its tensors.</summary>
public sealed class MergedTensor : IDisposable
{
    /// <summary>Wraps a method's result for one tensor, taking ownership of the tensors.</summary>
    /// <param name="merged">The shared merged weights θ.</param>
    /// <param name="taskSpecific">Per-task masks and scales, or null.</param>
    public MergedTensor(Tensor merged, TaskSpecificTensor? taskSpecific = null)
    {
        ArgumentNullException.ThrowIfNull(merged);
        Merged = merged;
        TaskSpecific = taskSpecific;
    }

    /// <summary>The shared merged weights θ (float32, shape of the base): the model used when the task is unknown.</summary>
    public Tensor Merged { get; }

    /// <summary>Per-task masks and scales, for methods where the task is known at inference (TALL masks, EMR); else null.</summary>
    public TaskSpecificTensor? TaskSpecific { get; }

    /// <summary>Takes every tensor out of any dispose scope, so the result outlives the caller's scope.</summary>
    public MergedTensor DetachFromDisposeScope()
    {
        Merged.DetachFromDisposeScope();
        TaskSpecific?.DetachFromDisposeScope();
        return this;
    }

    /// <summary>Disposes the merged tensor and the task-specific tensors.</summary>
    public void Dispose()
    {
        Merged.Dispose();
        TaskSpecific?.Dispose();
    }
}
