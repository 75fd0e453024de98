namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Two float32 buffers of the largest merged tensor, allocated once and lent in turn for each tensor's merged weights, so
/// no tensor-sized block is allocated per tensor. The caller must not lend a buffer again before what was written from it
/// two loans ago is done (one write in flight at most).
/// </summary>
internal sealed class OutputBufferRing(long capacity)
{
    private readonly FloatSegments[] _buffers = [new FloatSegments(capacity), new FloatSegments(capacity)];
    private int _next;

    /// <summary>The next buffer, sized to <paramref name="count"/> entries, valid until it is lent again.</summary>
    public FloatSegments Lend(long count)
    {
        var buffer = _buffers[_next];
        _next = 1 - _next;
        buffer.Resize(count);
        return buffer;
    }
}
