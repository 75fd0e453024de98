using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Runs an <see cref="IElementwiseMergeMethod"/> over a whole <see cref="MergeTensorInput"/> (the in-memory driver's
/// and any tensor-at-a-time caller's path), chunk by chunk with the same kernels the streaming driver uses, so both
/// drivers give the same bits.
/// </summary>
internal static class ElementwiseTensors
{
    /// <summary>Entries per chunk: θ0 and four experts' τ stay within a core's L2 cache.</summary>
    internal const int ChunkElements = 1 << 15;

    /// <summary>Span access is limited to 2 GiB, so larger tensors are taken in segments (the output buffers' own size).</summary>
    private const long SegmentElements = FloatSegments.SegmentElements;

    [ThreadStatic]
    private static float[]? t_baseValues;

    [ThreadStatic]
    private static float[]? t_taskVectors;

    private delegate void ChunkVisitor(in ElementwiseChunk chunk, Span<float> output);

    /// <summary>Merges one chunk into its slice of the output.</summary>
    internal delegate void ChunkMerger(in ElementwiseChunk chunk, Span<float> merged);

    public static void Accumulate(IChunkAccumulator accumulator, MergeTensorInput input) =>
        ForEachChunk(input, output: null, (in ElementwiseChunk chunk, Span<float> _) => accumulator.Accumulate(chunk));

    /// <summary>Threads a tensor-wise pass (<see cref="TensorBuffers"/>) may use: the processor count, at most 8 (as the streaming driver's workers).</summary>
    internal static int ParallelWorkers { get; set; } = Math.Clamp(Environment.ProcessorCount, 1, 8);

    /// <summary>The merged weights, a new float32 tensor of the base's shape.</summary>
    public static Tensor Merge(IElementwiseMergeMethod method, MergeTensorInput input) =>
        Merge(input, (in ElementwiseChunk chunk, Span<float> output) => method.MergeChunk(chunk, output));

    /// <summary>The merged weights computed chunk by chunk by <paramref name="mergeChunk"/>, a new float32 tensor of the base's shape.</summary>
    public static Tensor Merge(MergeTensorInput input, ChunkMerger mergeChunk)
    {
        var merged = empty(input.Base.shape, dtype: ScalarType.Float32, device: input.Base.device);
        try
        {
            ForEachChunk(input, merged, (in ElementwiseChunk chunk, Span<float> output) => mergeChunk(chunk, output));
            return merged;
        }
        catch
        {
            merged.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A task-specific method's merged weights, shared task vector and masks (boolean [experts, ...]) of a whole tensor,
    /// chunk by chunk with the streaming driver's kernel (same bits), no [experts, ...]-sized float temporaries.
    /// </summary>
    public static MergedTensor MergeTaskSpecific(ITaskSpecificElementwiseMethod method, MergeTensorInput input)
    {
        int experts = input.ExpertCount;
        using var scope = NewDisposeScope();
        var shared = empty(input.Base.shape, dtype: ScalarType.Float32, device: input.Base.device);
        var masks = empty([experts, .. input.Base.shape], dtype: ScalarType.Bool, device: input.Base.device);
        var flatShared = shared.view(-1);
        var maskRows = masks.view(experts, -1).unbind(0);
        var scratch = new byte[experts * ChunkElements];
        var merged = Merge(input, (in ElementwiseChunk chunk, Span<float> output) =>
        {
            int n = chunk.Length;
            using var sharedPart = flatShared.narrow(0, chunk.Start, n);
            method.MergeChunk(chunk, output, MemoryMarshal.Cast<byte, float>(sharedPart.bytes), scratch.AsSpan(0, experts * n));
            for (int e = 0; e < experts; e++)
            {
                using var row = maskRows[e].narrow(0, chunk.Start, n);
                scratch.AsSpan(e * n, n).CopyTo(row.bytes);
            }
        });
        var taskMasks = masks.unbind(0);
        var result = new MergedTensor(merged, new TaskSpecificTensor(shared, taskMasks, method.TaskScales(experts)));
        scope.MoveToOuter([merged, shared, .. taskMasks]);
        return result;
    }

    /// <summary>A task-specific method's merged weights alone (its masks and shared task vector go to scratch).</summary>
    public static void MergeOnly(ITaskSpecificElementwiseMethod method, in ElementwiseChunk chunk, Span<float> merged)
    {
        var shared = t_shared ??= new float[ChunkElements];
        var masks = t_masks is { } reused && reused.Length >= chunk.ExpertCount * ChunkElements ? reused : t_masks = new byte[chunk.ExpertCount * ChunkElements];
        method.MergeChunk(chunk, merged, shared.AsSpan(0, chunk.Length), masks.AsSpan(0, chunk.ExpertCount * chunk.Length));
    }

    [ThreadStatic]
    private static float[]? t_shared;

    [ThreadStatic]
    private static byte[]? t_masks;

    private static void ForEachChunk(MergeTensorInput input, Tensor? output, ChunkVisitor visit)
    {
        using var scope = NewDisposeScope();
        var (flatBase, flatRows, flatOutput) = Flatten(input, output);
        long count = flatBase.shape[0];
        for (long segment = 0; segment < count; segment += SegmentElements)
        {
            long length = Math.Min(SegmentElements, count - segment);
            VisitRange(input, segment, length, flatBase.narrow(0, segment, length), [.. flatRows.Select(r => r.narrow(0, segment, length))],
                flatOutput?.narrow(0, segment, length), visit);
        }
    }

    /// <summary>The base, each task vector and the output as flat float32 views (CPU tensors only).</summary>
    private static (Tensor Base, Tensor[] Rows, Tensor? Output) Flatten(MergeTensorInput input, Tensor? output)
    {
        if (input.Base.device_type != TorchSharp.DeviceType.CPU)
            throw new NotSupportedException($"Tensor '{input.Name}': elementwise merging runs on CPU tensors.");
        return (input.Base.contiguous().reshape(-1), [.. input.TaskVectors.Select(t => t.contiguous().reshape(-1))], output?.view(-1));
    }

    /// <summary>
    /// Visits the chunks of one range (at most a span's 2 GiB) that starts at entry <paramref name="rangeStart"/> of the
    /// tensor, copying each chunk's values into this thread's buffers (reused: a tensor-at-a-time merge calls this several
    /// times per tensor, with no large-object garbage each time).
    /// </summary>
    private static void VisitRange(MergeTensorInput input, long rangeStart, long rangeLength, Tensor baseRange, Tensor[] rowRanges, Tensor? outputRange, ChunkVisitor visit)
    {
        int experts = input.ExpertCount;
        var baseValues = t_baseValues ??= new float[ChunkElements];
        var taskVectors = t_taskVectors is { } reused && reused.Length >= experts * ChunkElements ? reused : t_taskVectors = new float[experts * ChunkElements];
        for (int start = 0; start < rangeLength; start += ChunkElements)
        {
            int length = (int)Math.Min(ChunkElements, rangeLength - start);
            MemoryMarshal.Cast<byte, float>(baseRange.bytes).Slice(start, length).CopyTo(baseValues);
            for (int e = 0; e < experts; e++)
                MemoryMarshal.Cast<byte, float>(rowRanges[e].bytes).Slice(start, length).CopyTo(taskVectors.AsSpan(e * length, length));
            var chunk = new ElementwiseChunk(baseValues.AsSpan(0, length), taskVectors.AsSpan(0, experts * length), experts, input.Name, rangeStart + start, input.LackingExperts);
            var outputSpan = outputRange is null ? Span<float>.Empty : MemoryMarshal.Cast<byte, float>(outputRange.bytes).Slice(start, length);
            visit(chunk, outputSpan);
        }
    }
}
