namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A merge method whose result at an entry depends only on that entry's θ0 and τ_i (plus statistics of earlier passes),
/// so a streaming driver may feed it any slice of a tensor: small slices that stay in cache, on several threads, with no
/// tensor-sized temporaries. <see cref="IMergeMethod.MergeTensor"/> must give the same bits as merging every slice.
/// </summary>
internal interface IElementwiseMergeMethod : IMergeMethod
{
    /// <summary>False when this instance is not elementwise (e.g. TIES with a per-tensor trim): use the tensor path.</summary>
    bool IsElementwise { get; }

    /// <summary>A fresh accumulator for statistics pass <paramref name="pass"/>, one per thread.</summary>
    IChunkAccumulator CreateAccumulator(int pass);

    /// <summary>Adds what <paramref name="accumulator"/> gathered to pass <paramref name="pass"/> (before <see cref="IMergeMethod.FinishPass"/>).</summary>
    void AddAccumulated(int pass, IChunkAccumulator accumulator);

    /// <summary>Writes the merged weights of the chunk's entries to <paramref name="merged"/> (its length).</summary>
    void MergeChunk(in ElementwiseChunk chunk, Span<float> merged);
}

/// <summary>Statistics of one pass gathered chunk by chunk on one thread.</summary>
internal interface IChunkAccumulator
{
    void Accumulate(in ElementwiseChunk chunk);
}
