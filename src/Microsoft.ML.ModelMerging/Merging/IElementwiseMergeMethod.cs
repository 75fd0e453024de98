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

    /// <summary>
    /// When pass <paramref name="pass"/> looks at a sample of the model: about how many chunks the streaming driver
    /// feeds it, spread evenly over all merged tensors, instead of every chunk (a driver holding the tensors in memory
    /// may feed everything). Null: every chunk.
    /// </summary>
    int? SampledChunks(int pass) => null;

    /// <summary>A fresh accumulator for statistics pass <paramref name="pass"/>, one per thread.</summary>
    IChunkAccumulator CreateAccumulator(int pass);

    /// <summary>Adds what <paramref name="accumulator"/> gathered to pass <paramref name="pass"/> (before <see cref="IMergeMethod.FinishPass"/>).</summary>
    void AddAccumulated(int pass, IChunkAccumulator accumulator);

    /// <summary>Writes the merged weights of the chunk's entries to <paramref name="merged"/> (its length).</summary>
    void MergeChunk(in ElementwiseChunk chunk, Span<float> merged);

    /// <summary>
    /// When the last statistics pass only decides the merged value of a few entries, a merge that stands in for it:
    /// the driver runs the earlier passes, merges every tensor with <see cref="DeferredLastPass"/>'s workers, hands each
    /// worker to <see cref="AddAccumulated"/> for the last pass and finishes it, then overwrites the entries
    /// <see cref="DeferredLastPass.Patches"/> names. At most <paramref name="maxPatches"/> entries are recorded; past that
    /// the deferral is <see cref="DeferredLastPass.Overflowed"/> and the driver must run the pass and merge again. Null:
    /// run every pass before the merge.
    /// </summary>
    DeferredLastPass? BeginDeferredLastPass(long maxPatches) => null;
}

/// <summary>A merge run before the method's last statistics pass, see <see cref="IElementwiseMergeMethod.BeginDeferredLastPass"/>.</summary>
internal abstract class DeferredLastPass
{
    /// <summary>A worker for one thread: merges chunks and gathers the last pass's statistics.</summary>
    public abstract IDeferredChunkMerger CreateWorker();

    /// <summary>More entries than allowed depended on the last pass: the merged output is unusable.</summary>
    public abstract bool Overflowed { get; }

    /// <summary>After the last pass is finished: (tensor index as given to the workers, entry index, merged value) to overwrite.</summary>
    public abstract IEnumerable<(int Tensor, long Index, float Value)> Patches(IEnumerable<IDeferredChunkMerger> workers);
}

/// <summary>One thread's part of a <see cref="DeferredLastPass"/>.</summary>
internal interface IDeferredChunkMerger : IChunkAccumulator
{
    /// <summary>Like <see cref="IElementwiseMergeMethod.MergeChunk"/> for entries [start, start + length) of tensor <paramref name="tensor"/>.</summary>
    void MergeChunk(in ElementwiseChunk chunk, Span<float> merged, int tensor, long start);
}

/// <summary>Statistics of one pass gathered chunk by chunk on one thread.</summary>
internal interface IChunkAccumulator
{
    void Accumulate(in ElementwiseChunk chunk);
}

/// <summary>
/// An elementwise method that also gives, per entry, the shared task vector and one mask bit per task (TALL masks, EMR):
/// the streaming driver fills compact buffers chunk by chunk instead of merging whole tensors with libtorch.
/// </summary>
internal interface ITaskSpecificElementwiseMethod : IElementwiseMergeMethod
{
    /// <summary>
    /// Writes the chunk's merged weights, shared task vector (each the chunk's length) and masks: expert after expert, the
    /// chunk's length each, 1 where the task keeps the entry, else 0 (the bytes of a boolean tensor).
    /// </summary>
    void MergeChunk(in ElementwiseChunk chunk, Span<float> merged, Span<float> shared, Span<byte> masks);

    /// <summary>s_t per task (after the statistics passes).</summary>
    IReadOnlyList<double> TaskScales(int experts);

    /// <summary>
    /// True when the (single) statistics pass only decides the scales s_t, not the merged weights, shared task vector or
    /// masks: the streaming driver then merges in the same read, hands every merged chunk to <see cref="AccumulateMerged"/>,
    /// finishes the pass and overwrites the scales written so far (one read of the inputs instead of two).
    /// </summary>
    bool ScalesFromMerge => false;

    /// <summary>Adds a chunk merged by <see cref="MergeChunk"/> (its shared task vector and masks) to an accumulator of the statistics pass.</summary>
    void AccumulateMerged(IChunkAccumulator accumulator, in ElementwiseChunk chunk, ReadOnlySpan<float> shared, ReadOnlySpan<byte> masks) =>
        throw new NotSupportedException();
}
