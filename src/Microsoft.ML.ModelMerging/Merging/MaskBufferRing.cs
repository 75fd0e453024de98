namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Two sets of per-task mask bytes (one byte per entry, a boolean tensor's stored form) of the largest merged tensor,
/// allocated once and lent in turn like <see cref="OutputBufferRing"/>, with the same rule (one write in flight at most).
/// </summary>
internal sealed class MaskBufferRing(int tasks, long capacity)
{
    private readonly byte[][][] _buffers =
        [.. Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, tasks).Select(_ => new byte[capacity]).ToArray())];
    private int _next;

    /// <summary>The next set: one array per task, valid until it is lent again.</summary>
    public byte[][] Lend()
    {
        var buffer = _buffers[_next];
        _next = 1 - _next;
        return buffer;
    }
}
