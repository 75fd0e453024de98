namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Runs writes one after another on a second thread, at most one in flight, so writing tensor k overlaps merging
/// tensor k+1. A failed write surfaces at the next <see cref="Enqueue"/> or <see cref="Drain"/>.
/// </summary>
internal sealed class OrderedBackgroundWrites : IDisposable
{
    private Task _pending = Task.CompletedTask;

    /// <summary>Waits for the previous write, then starts <paramref name="write"/>.</summary>
    public void Enqueue(Action write)
    {
        Drain();
        _pending = Task.Run(write);
    }

    /// <summary>Waits for the write in flight; rethrows its error.</summary>
    public void Drain()
    {
        var pending = _pending;
        _pending = Task.CompletedTask;
        pending.GetAwaiter().GetResult();
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
    }
}
