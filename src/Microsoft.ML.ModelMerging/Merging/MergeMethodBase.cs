namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Checks the call protocol of <see cref="IMergeMethod"/> (begin, passes in order, then merge) so a driver bug fails
/// with a clear message instead of merging with missing statistics.
/// </summary>
public abstract class MergeMethodBase : IMergeMethod
{
    private int _expertCount;
    private int _finishedPasses;

    public abstract string Name { get; }

    public virtual int StatisticsPassCount => 0;

    public virtual bool ProducesTaskSpecificWeights => false;

    public virtual bool NeedsPass(int pass) => true;

    /// <summary>The expert count given to <see cref="Begin"/>.</summary>
    protected int ExpertCount => _expertCount > 0
        ? _expertCount
        : throw new InvalidOperationException($"Merge method '{Name}': Begin(expertCount) was not called.");

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

    public void AccumulateStatistics(int pass, MergeTensorInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        EnsurePassIsCurrent(pass);
        EnsureExpertCount(input);
        Accumulate(pass, input);
    }

    public void FinishPass(int pass)
    {
        EnsurePassIsCurrent(pass);
        CompletePass(pass);
        _finishedPasses++;
    }

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

    protected virtual void OnBegin(int expertCount)
    {
    }

    protected virtual void Accumulate(int pass, MergeTensorInput input)
    {
    }

    protected virtual void CompletePass(int pass)
    {
    }

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
