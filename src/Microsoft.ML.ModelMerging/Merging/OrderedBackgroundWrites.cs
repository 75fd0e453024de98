namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Runs writes one after another on a second thread, at most one in flight, so writing tensor k overlaps merging
/// tensor k+1. A failed write surfaces at the next <see cref="Enqueue"/> or <see cref="Drain"/>.
/// </summary>
/// <remarks>
/// What a write owns (the merged tensor) is disposed on the caller's thread once the write is done, at a predictable
/// point: just before the caller allocates the next result, which then reuses the freed block. Freeing it on the writing
/// thread, at whatever moment the write ends, fragments the native heap and grows the resident set.
/// </remarks>
internal sealed class OrderedBackgroundWrites : IDisposable
{
    private Task _pending = Task.CompletedTask;
    private IDisposable? _pendingOwned;

    /// <summary>Waits for the previous write, then starts <paramref name="write"/>; <paramref name="owned"/> is disposed after it.</summary>
    public void Enqueue(Action write, IDisposable? owned = null)
    {
        try
        {
            Drain();
        }
        catch
        {
            owned?.Dispose();
            throw;
        }

        _pendingOwned = owned;
        // A thread of its own, not the thread pool's: the merge keeps every pool thread busy, and a write queued behind
        // them would start only when the next tensor is merged, so writing and merging would take turns.
        _pending = Task.Factory.StartNew(write, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Waits for the write in flight and disposes what it owned; rethrows its error.</summary>
    public void Drain()
    {
        var pending = _pending;
        var owned = _pendingOwned;
        _pending = Task.CompletedTask;
        _pendingOwned = null;
        try
        {
            pending.GetAwaiter().GetResult();
        }
        finally
        {
            owned?.Dispose();
        }
    }

    /// <summary>Waits for the write in flight (its error, if any, is not rethrown: the caller is already failing).</summary>
    public void Dispose()
    {
        try
        {
            _pending.Wait();
        }
        catch (AggregateException)
        {
        }

        _pendingOwned?.Dispose();
        _pendingOwned = null;
    }
}
