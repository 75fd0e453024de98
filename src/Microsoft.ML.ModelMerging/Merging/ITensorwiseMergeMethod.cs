namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A merge method whose result for a tensor depends on statistics of that tensor alone (TIES with a per-tensor trim):
/// the streaming driver reads each tensor once into <see cref="TensorBuffers"/> and lets the method look at it as often as
/// it needs, in place and on every core, instead of reading the checkpoints again per look.
/// <see cref="IMergeMethod.MergeTensor"/> must give the same bits.
/// </summary>
internal interface ITensorwiseMergeMethod : IMergeMethod
{
    /// <summary>False when this instance does not merge tensor by tensor from its buffers (e.g. TIES with the global trim).</summary>
    bool IsTensorwise { get; }

    /// <summary>Writes the merged weights of the tensor held in <paramref name="tensor"/> to <paramref name="output"/> (its length).</summary>
    void MergeTensor(TensorBuffers tensor, FloatSegments output);
}
