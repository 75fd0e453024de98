using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Raw byte access to contiguous CPU tensors. TorchSharp exposes a tensor's storage as a <see cref="Span{T}"/>, which is limited
/// to 2 GiB, so larger tensors are visited in element-aligned chunks through flat views that share the storage.
/// </summary>
internal static unsafe class TensorBytes
{
    private const long ChunkBytes = 1L << 30;

    /// <summary>Calls <paramref name="visit"/> with the tensor's bytes in order, chunk by chunk.</summary>
    public static void Read(torch.Tensor contiguousCpu, Action<IntPtr, int> visit)
    {
        foreach (var (view, owned) in Chunks(contiguousCpu))
        {
            var span = view.bytes;
            fixed (byte* p = span) visit((IntPtr)p, span.Length);
            if (owned) view.Dispose();
        }
    }

    /// <summary>Fills the tensor's storage from native memory.</summary>
    public static void Write(torch.Tensor contiguousCpu, byte* source)
    {
        long done = 0;
        foreach (var (view, owned) in Chunks(contiguousCpu))
        {
            var span = view.bytes;
            fixed (byte* p = span) Buffer.MemoryCopy(source + done, p, span.Length, span.Length);
            done += span.Length;
            if (owned) view.Dispose();
        }
    }

    private static IEnumerable<(torch.Tensor View, bool Owned)> Chunks(torch.Tensor t)
    {
        long elementSize = t.ElementSize;
        long total = t.numel() * elementSize;
        if (total == 0) yield break;
        if (total <= ChunkBytes)
        {
            yield return (t, false);
            yield break;
        }
        long perChunk = ChunkBytes / elementSize;
        using var flat = t.view(-1);
        for (long start = 0; start < t.numel(); start += perChunk)
            yield return (flat.narrow(0, start, Math.Min(perChunk, t.numel() - start)), true);
    }
}
