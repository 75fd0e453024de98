namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Checks the call protocol of <see cref="IMergeMethod"/> (begin, passes in order, then merge) so a driver bug fails
/// with a clear message instead of merging with missing statistics.
/// </summary>
public abstract class MergeMethodBase : IMergeMethod
{
    private int _expertCount;
    private int _finishedPasses;

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <inheritdoc/>
    /// <remarks>0 unless overridden.</remarks>
    public virtual int StatisticsPassCount => 0;

    /// <inheritdoc/>
    /// <remarks>False unless overridden.</remarks>
    public virtual bool ProducesTaskSpecificWeights => false;

    /// <inheritdoc/>
    /// <remarks>True unless overridden.</remarks>
    public virtual bool NeedsPass(int pass) => true;

    /// <summary>The expert count given to <see cref="Begin"/>.</summary>
    protected int ExpertCount => _expertCount > 0
        ? _expertCount
        : throw new InvalidOperationException($"Merge method '{Name}': Begin(expertCount) was not called.");

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="expertCount"/> is less than 1.</exception>
    public void Begin(int expertCount)
    {
        if (expertCount < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(expertCount), expertCount, $"Merge method '{Name}' needs at least one expert.");
        }

        // A Begin that fails (e.g. a per-expert parameter of the wrong length) leaves the method unusable.
        _expertCount = 0;
        _finishedPasses = 0;
        OnBegin(expertCount);
        _expertCount = expertCount;
    }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">Called out of order (before <see cref="Begin"/>, or for a pass that is not the current one).</exception>
    public void AccumulateStatistics(int pass, MergeTensorInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        EnsurePassIsCurrent(pass);
        EnsureExpertCount(input);
        Accumulate(pass, input);
    }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">Called out of order.</exception>
    public void FinishPass(int pass)
    {
        EnsurePassIsCurrent(pass);
        CompletePass(pass);
        _finishedPasses++;
    }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">Called before <see cref="Begin"/> or before every statistics pass finished.</exception>
    public MergedTensor MergeTensor(MergeTensorInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _ = ExpertCount;
        if (_finishedPasses != StatisticsPassCount)
        {
            throw new InvalidOperationException(
                $"Merge method '{Name}' needs {StatisticsPassCount} statistics pass(es) before merging; {_finishedPasses} finished.");
        }

        EnsureExpertCount(input);
        return Merge(input);
    }

    /// <summary>Called by <see cref="Begin"/> after its checks: validate per-expert settings and reset statistics here.</summary>
    protected virtual void OnBegin(int expertCount)
    {
    }

    /// <summary>Called by <see cref="AccumulateStatistics"/> once the call order and the expert count are checked.</summary>
    protected virtual void Accumulate(int pass, MergeTensorInput input)
    {
    }

    /// <summary>Called by <see cref="FinishPass"/> for the current pass.</summary>
    protected virtual void CompletePass(int pass)
    {
    }

    /// <summary>Called by <see cref="MergeTensor"/> once every statistics pass is finished: the merged tensor, owned by the caller.</summary>
    protected abstract MergedTensor Merge(MergeTensorInput input);

    private void EnsurePassIsCurrent(int pass)
    {
        _ = ExpertCount;
        if (pass != _finishedPasses || pass >= StatisticsPassCount)
        {
            throw new InvalidOperationException(
                $"Merge method '{Name}': statistics pass {pass} was not expected now " +
                $"({_finishedPasses} of {StatisticsPassCount} pass(es) finished).");
        }
    }

    private void EnsureExpertCount(MergeTensorInput input)
    {
        if (input.ExpertCount != ExpertCount)
        {
            throw new MergeInputException(
                $"Tensor '{input.Name}' comes with {input.ExpertCount} task vector(s) but merge method '{Name}' was begun with {ExpertCount} expert(s).",
                input.Name);
        }
    }
}
