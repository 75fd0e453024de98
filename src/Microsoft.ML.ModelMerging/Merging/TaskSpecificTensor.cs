using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// The compressed per-task form of one tensor: task t's weights are θ_t = θ0 + s_t · (M_t ⊙ τ_shared), with one
/// shared task vector, one boolean mask per task and one scale per task. Owns its tensors.
/// </summary>
/// <remarks>TALL masks: τ_shared = Σ τ_i and s_t = 1. EMR-Merging: τ_shared = τ_uni and s_t = λ_t.</remarks>
public sealed class TaskSpecificTensor : IDisposable
{
    /// <summary>Takes ownership of the shared task vector and the masks.</summary>
    /// <param name="sharedTaskVector">τ_shared, float32.</param>
    /// <param name="masks">M_t per task, boolean, same shape.</param>
    /// <param name="scales">s_t per task, as many as masks.</param>
    /// <exception cref="ArgumentException">Mask and scale counts differ.</exception>
    public TaskSpecificTensor(Tensor sharedTaskVector, IReadOnlyList<Tensor> masks, IReadOnlyList<double> scales)
    {
        ArgumentNullException.ThrowIfNull(sharedTaskVector);
        ArgumentNullException.ThrowIfNull(masks);
        ArgumentNullException.ThrowIfNull(scales);
        if (masks.Count != scales.Count)
        {
            throw new ArgumentException($"{masks.Count} mask(s) but {scales.Count} scale(s).", nameof(scales));
        }

        SharedTaskVector = sharedTaskVector;
        Masks = masks;
        Scales = scales;
    }

    /// <summary>τ_shared, float32.</summary>
    public Tensor SharedTaskVector { get; }

    /// <summary>M_t per task, boolean, shape of <see cref="SharedTaskVector"/>.</summary>
    public IReadOnlyList<Tensor> Masks { get; }

    /// <summary>s_t per task.</summary>
    public IReadOnlyList<double> Scales { get; }

    /// <summary>Number of tasks (masks).</summary>
    public int TaskCount => Masks.Count;

    /// <summary>θ_t = θ0 + s_t · (M_t ⊙ τ_shared), float32. The caller owns the result.</summary>
    public Tensor Materialize(int task, Tensor baseTensor)
    {
        ArgumentNullException.ThrowIfNull(baseTensor);
        if (task < 0 || task >= TaskCount)
        {
            throw new ArgumentOutOfRangeException(nameof(task), task, $"Task index must be in [0, {TaskCount}).");
        }

        using var scope = NewDisposeScope();
        var taskVector = SharedTaskVector.mul(Masks[task]);
        if (Scales[task] != 1.0)
        {
            taskVector = ScalarOperands.With(Scales[task], taskVector.mul);
        }

        return baseTensor.to_type(ScalarType.Float32).Plus(taskVector).MoveToOuterDisposeScope();
    }

    /// <summary>Takes every tensor out of any dispose scope.</summary>
    public void DetachFromDisposeScope()
    {
        SharedTaskVector.DetachFromDisposeScope();
        foreach (var mask in Masks)
        {
            mask.DetachFromDisposeScope();
        }
    }

    /// <summary>Disposes the shared task vector and the masks.</summary>
    public void Dispose()
    {
        SharedTaskVector.Dispose();
        foreach (var mask in Masks)
        {
            mask.Dispose();
        }
    }
}
