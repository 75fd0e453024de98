using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Two float32 buffers of the largest merged tensor, allocated once and lent in turn for each tensor's merged weights, so
/// the native heap sees no tensor-sized block per tensor. The caller must not lend a buffer again before what was written
/// from it two loans ago is done (one write in flight at most).
/// </summary>
internal sealed class OutputBufferRing : IDisposable
{
    private readonly Tensor[] _buffers;
    private readonly Tensor?[] _lent = new Tensor?[2];
    private int _next;

    public OutputBufferRing(long capacity)
    {
        long elements = Math.Max(capacity, 1);
        _buffers = [empty(elements, dtype: ScalarType.Float32).DetachFromDisposeScope(), empty(elements, dtype: ScalarType.Float32).DetachFromDisposeScope()];
    }

    /// <summary>A view of the next buffer with <paramref name="shape"/>, valid until the buffer is lent again; the ring owns it.</summary>
    public Tensor Lend(long[] shape)
    {
        int index = _next;
        _next = 1 - _next;
        _lent[index]?.Dispose();
        long count = shape.Aggregate(1L, (product, size) => product * size);
        using var flat = _buffers[index].narrow(0, 0, count);
        _lent[index] = flat.view(shape).DetachFromDisposeScope();
        return _lent[index]!;
    }

    public void Dispose()
    {
        foreach (var view in _lent) view?.Dispose();
        foreach (var buffer in _buffers) buffer.Dispose();
    }
}
