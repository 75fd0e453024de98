using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Raw byte access to contiguous CPU tensors. TorchSharp exposes a tensor's storage as a <see cref="Span{T}"/>, which is limited
/// to 2 GiB, so larger tensors are visited in element-aligned chunks through flat views that share the storage.
/// </summary>
internal static class TensorBytes
{
    private const long ChunkBytes = 1L << 30;

    internal delegate void SpanVisitor(Span<byte> bytes);

    /// <summary>Calls <paramref name="visit"/> with the tensor's storage in order, chunk by chunk (reading or filling it).</summary>
    public static void Visit(torch.Tensor contiguousCpu, SpanVisitor visit)
    {
        long elementSize = contiguousCpu.ElementSize;
        long count = contiguousCpu.numel();
        if (count == 0) return;
        if (count * elementSize <= ChunkBytes)
        {
            visit(contiguousCpu.bytes);
            return;
        }
        long perChunk = ChunkBytes / elementSize;
        using var flat = contiguousCpu.view(-1);
        for (long start = 0; start < count; start += perChunk)
        {
            using var view = flat.narrow(0, start, Math.Min(perChunk, count - start));
            visit(view.bytes);
        }
    }
}
