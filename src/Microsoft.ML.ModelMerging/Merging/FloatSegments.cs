namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A float32 vector of any length held as consecutive arrays of <see cref="SegmentElements"/> entries (one .NET array
/// holds at most 2^31 − 1), allocated once at a capacity and reused for shorter vectors.
/// </summary>
internal sealed class FloatSegments
{
    /// <summary>A multiple of <see cref="ElementwiseTensors.ChunkElements"/>, so no chunk straddles two arrays.</summary>
    public const long SegmentElements = 1L << 28;

    private readonly float[][] _arrays;

    public FloatSegments(long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        Capacity = capacity;
        _arrays = [.. Enumerable.Range(0, (int)((capacity + SegmentElements - 1) / SegmentElements))
            .Select(i => GC.AllocateUninitializedArray<float>((int)Math.Min(SegmentElements, capacity - (i * SegmentElements))))];
    }

    public long Capacity { get; }

    /// <summary>The entries in use, at most <see cref="Capacity"/>.</summary>
    public long Count { get; private set; }

    public void Resize(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, Capacity);
        Count = count;
    }

    /// <summary>Entries [start, start + length), which must lie within one segment (true of any chunk).</summary>
    public Span<float> Slice(long start, int length)
    {
        if (start < 0 || start + length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), start, $"entries [{start}, {start + length}) are outside {Count}.");
        return _arrays[start / SegmentElements].AsSpan((int)(start % SegmentElements), length);
    }

    /// <summary>The <see cref="Count"/> entries in order, one piece per segment.</summary>
    public IReadOnlyList<ReadOnlyMemory<float>> Parts()
    {
        var parts = new List<ReadOnlyMemory<float>>();
        for (long start = 0; start < Count; start += SegmentElements)
            parts.Add(_arrays[start / SegmentElements].AsMemory(0, (int)Math.Min(SegmentElements, Count - start)));
        return parts;
    }

    /// <summary>The <see cref="Count"/> entries as a new float32 tensor of <paramref name="shape"/>.</summary>
    public TorchSharp.torch.Tensor ToTensor(long[] shape)
    {
        var result = TorchSharp.torch.empty(shape, dtype: TorchSharp.torch.ScalarType.Float32);
        try
        {
            using var flat = result.view(-1);
            for (long start = 0; start < Count; start += SegmentElements)
            {
                int length = (int)Math.Min(SegmentElements, Count - start);
                using var part = flat.narrow(0, start, length);
                Slice(start, length).CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(part.bytes));
            }

            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }
}
