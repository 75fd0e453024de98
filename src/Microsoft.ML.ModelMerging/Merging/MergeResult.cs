using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>The outcome of an in-memory merge; owns its tensors.</summary>
public sealed class MergeResult : IDisposable
{
    private readonly IReadOnlyDictionary<string, Tensor> _baseModel;

    internal MergeResult(
        IReadOnlyDictionary<string, Tensor> merged,
        IReadOnlyDictionary<string, TaskSpecificTensor> taskSpecific,
        IReadOnlyList<string> mergedTensorNames,
        IReadOnlyList<string> copiedTensorNames,
        int expertCount,
        bool hasTaskSpecificWeights,
        IReadOnlyDictionary<string, Tensor> baseModel)
    {
        Merged = merged;
        TaskSpecific = taskSpecific;
        MergedTensorNames = mergedTensorNames;
        CopiedTensorNames = copiedTensorNames;
        ExpertCount = expertCount;
        HasTaskSpecificWeights = hasTaskSpecificWeights;
        _baseModel = baseModel;
    }

    /// <summary>Every tensor of the base model: merged ones, and copies of the excluded ones. Dtypes of the base.</summary>
    public IReadOnlyDictionary<string, Tensor> Merged { get; }

    /// <summary>Per merged tensor, the masks and scales of methods with task-specific weights; empty otherwise.</summary>
    public IReadOnlyDictionary<string, TaskSpecificTensor> TaskSpecific { get; }

    /// <summary>Names of the merged tensors, sorted.</summary>
    public IReadOnlyList<string> MergedTensorNames { get; }

    /// <summary>Names of the tensors copied from the base, sorted.</summary>
    public IReadOnlyList<string> CopiedTensorNames { get; }

    /// <summary>Number of experts merged.</summary>
    public int ExpertCount { get; }

    /// <summary>True when the method produced per-task masks and scales (<see cref="TaskSpecific"/>, <see cref="MaterializeTask"/>).</summary>
    public bool HasTaskSpecificWeights { get; }

    /// <summary>
    /// Task <paramref name="task"/>'s model, θ_t = θ0 + s_t·(M_t ⊙ τ_shared) for merged tensors and the base's for the
    /// others, in the base's dtypes. Uses the base model given to the merge, which must still be alive. The caller
    /// owns the returned tensors.
    /// </summary>
    public Dictionary<string, Tensor> MaterializeTask(int task)
    {
        if (!HasTaskSpecificWeights)
        {
            throw new InvalidOperationException("This merge method has no task-specific weights; use Merged.");
        }

        if (task < 0 || task >= ExpertCount)
        {
            throw new ArgumentOutOfRangeException(nameof(task), task, $"Task index must be in [0, {ExpertCount}).");
        }

        var model = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, tensor) in Merged)
        {
            if (TaskSpecific.TryGetValue(name, out var taskSpecific))
            {
                var baseTensor = _baseModel[name];
                using var materialized = taskSpecific.Materialize(task, baseTensor);
                model[name] = materialized.to_type(baseTensor.dtype, copy: true).DetachFromDisposeScope();
            }
            else
            {
                model[name] = tensor.clone().DetachFromDisposeScope();
            }
        }

        return model;
    }

    /// <summary>Disposes the merged tensors and the task-specific ones.</summary>
    public void Dispose()
    {
        foreach (var tensor in Merged.Values)
        {
            tensor.Dispose();
        }

        foreach (var taskSpecific in TaskSpecific.Values)
        {
            taskSpecific.Dispose();
        }
    }
}
