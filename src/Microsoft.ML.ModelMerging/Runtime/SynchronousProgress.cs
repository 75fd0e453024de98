namespace Microsoft.ML.ModelMerging.Runtime;

/// <summary>
/// Reports progress on the calling thread, in order. <see cref="Progress{T}"/> posts to the thread pool instead, so its
/// reports arrive late and out of order, and a cancellation triggered from a report would race the work it should stop.
/// </summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
