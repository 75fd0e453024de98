namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>One tensor as described by a safetensors header. <see cref="Offset"/> is relative to the start of the data section.</summary>
public sealed record TensorEntry(string Name, SafeTensorsDType DType, long[] Shape, long Offset, long ByteLength)
{
    /// <summary>Number of elements: the product of the shape (1 for a scalar).</summary>
    public long ElementCount => ShapeElementCount(Shape);

    /// <summary>The file that holds the tensor (a shard of a sharded checkpoint, or the single file).</summary>
    public string File { get; init; } = "";

    /// <summary>The shape as text, e.g. <c>[768, 3072]</c>.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    internal static long ShapeElementCount(long[] shape)
    {
        long count = 1;
        foreach (long d in shape) count *= d;
        return count;
    }
}

/// <summary>What a streaming writer needs to know about a tensor before any data is written.</summary>
public sealed record TensorSpec(string Name, SafeTensorsDType DType, long[] Shape)
{
    /// <summary>Size of the tensor's data in bytes, in its stored dtype.</summary>
    public long ByteLength => TensorEntry.ShapeElementCount(Shape) * DType.ElementSize();
}
