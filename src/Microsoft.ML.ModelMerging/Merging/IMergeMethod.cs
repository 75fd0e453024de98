namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A weight-only merge method, applied one tensor at a time so memory stays bounded by the largest tensor.
/// </summary>
/// <remarks>
/// A driver (in memory or streaming from disk) uses every method the same way:
/// <list type="number">
/// <item><see cref="Begin"/> with the number of experts;</item>
/// <item>for each statistics pass <c>p</c> in <c>0 .. StatisticsPassCount-1</c>: <see cref="AccumulateStatistics"/> for
/// every merged tensor (any order), then <see cref="FinishPass"/>; the driver re-reads the tensors for each pass;</item>
/// <item><see cref="MergeTensor"/> for every merged tensor (any order).</item>
/// </list>
/// Methods with global statistics (a threshold over the whole model, per-task scales) gather them in the passes and
/// keep only O(1)-sized summaries, never the tensors. An instance is single-use state: call <see cref="Begin"/>
/// again to start another merge.
/// </remarks>
public interface IMergeMethod
{
    /// <summary>The registry name, e.g. <c>ties</c>.</summary>
    string Name { get; }

    /// <summary>How many passes over all merged tensors the method needs before <see cref="MergeTensor"/>.</summary>
    int StatisticsPassCount { get; }

    /// <summary>True when <see cref="MergeTensor"/> also returns per-task masks and scales (task known at inference).</summary>
    bool ProducesTaskSpecificWeights { get; }

    /// <summary>Starts a merge of <paramref name="expertCount"/> experts, clearing any previous statistics.</summary>
    void Begin(int expertCount);

    /// <summary>Feeds one tensor to statistics pass <paramref name="pass"/>.</summary>
    void AccumulateStatistics(int pass, MergeTensorInput input);

    /// <summary>
    /// False when what the earlier passes found makes pass <paramref name="pass"/> unnecessary: the driver then calls
    /// <see cref="FinishPass"/> for it without feeding any tensor (and reads nothing).
    /// </summary>
    bool NeedsPass(int pass) => true;

    /// <summary>Closes statistics pass <paramref name="pass"/> once every merged tensor was fed to it.</summary>
    void FinishPass(int pass);

    /// <summary>Merges one tensor. The caller owns (and disposes) the result.</summary>
    MergedTensor MergeTensor(MergeTensorInput input);
}
