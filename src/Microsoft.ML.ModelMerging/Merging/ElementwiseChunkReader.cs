using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// The streaming driver's path for <see cref="IElementwiseMergeMethod"/>s: each tensor is cut into chunks of
/// <see cref="ElementwiseTensors.ChunkElements"/> entries, and every core takes chunks in turn, reading θ0 and each θ_i
/// of its chunk straight into small buffers of its own (they stay in cache), checking the values are finite, forming
/// τ_i = w_i·(θ_i − θ0) in place and handing the chunk to the method. Nothing tensor-sized is allocated, and reading,
/// converting and computing all run on every core instead of a reading thread feeding a computing one.
/// (Reading through memory maps instead was measured: no less CPU time on this VM, and the mapped pages count in the
/// resident set.)
/// </summary>
internal sealed class ElementwiseChunkReader
{
    private readonly Checkpoint _base;
    private readonly IReadOnlyList<Checkpoint> _experts;
    private readonly float[]? _weights;
    private readonly IReadOnlyList<string> _expertNames;
    private readonly Worker[] _workers;

    public delegate void ChunkAction(in ElementwiseChunk chunk, Span<float> output, int worker, long start);

    public ElementwiseChunkReader(Checkpoint baseCheckpoint, IReadOnlyList<Checkpoint> experts, IReadOnlyList<double>? expertWeights,
        IReadOnlyList<string> expertNames, int workers)
    {
        _base = baseCheckpoint;
        _experts = experts;
        // τ·w is a float32 product with w rounded to float32, as a float32 tensor times a scalar is.
        _weights = expertWeights?.Select(w => (float)w).ToArray();
        _expertNames = expertNames;
        _workers = [.. Enumerable.Range(0, Math.Max(1, workers)).Select(_ => new Worker(experts.Count))];
    }

    public int WorkerCount => _workers.Length;

    /// <summary>Whether every input stores <paramref name="name"/> in a dtype this path converts (float32/16, bfloat16, float64).</summary>
    public bool CanRead(string name) =>
        IsConvertible(_base.GetEntry(name).DType) && _experts.All(e => !e.Contains(name) || IsConvertible(e.GetEntry(name).DType));

    /// <summary>
    /// Runs <paramref name="action"/> on every chunk of tensor <paramref name="name"/>, on all workers; the chunk's slice
    /// of <paramref name="output"/> (the tensor's element count) is passed along when given, with the index of the
    /// chunk's first entry. Values are checked to be finite when <paramref name="checkFinite"/>.
    /// </summary>
    public void ForEachChunk(string name, FloatSegments? output, ChunkAction action, bool checkFinite = true)
    {
        long count = _base.GetEntry(name).ElementCount;
        long chunks = (count + ElementwiseTensors.ChunkElements - 1) / ElementwiseTensors.ChunkElements;
        Run(chunks, index => (name, index * ElementwiseTensors.ChunkElements, count), output, action, checkFinite);
    }

    /// <summary>
    /// Runs <paramref name="action"/> on the given chunks (tensor name, chunk index), of any tensors, on all workers (a
    /// sample spread over the model, where most tensors give one chunk or none).
    /// </summary>
    public void ForEachChunk(IReadOnlyList<(string Name, long Chunk)> chunks, ChunkAction action, bool checkFinite = true) =>
        Run(chunks.Count, index => (chunks[(int)index].Name, chunks[(int)index].Chunk * ElementwiseTensors.ChunkElements,
            _base.GetEntry(chunks[(int)index].Name).ElementCount), output: null, action, checkFinite);

    /// <summary>The workers take items 0 .. <paramref name="items"/> − 1 in turn; <paramref name="locate"/> gives each item's tensor, first entry and the tensor's length.</summary>
    private void Run(long items, Func<long, (string Name, long Start, long Count)> locate, FloatSegments? output, ChunkAction action, bool checkFinite)
    {
        long next = -1;
        string? nonFinite = null;

        void Work(int worker)
        {
            var buffers = _workers[worker];
            long index;
            while (Volatile.Read(ref nonFinite) is null && (index = Interlocked.Increment(ref next)) < items)
            {
                var (name, start, count) = locate(index);
                int length = (int)Math.Min(ElementwiseTensors.ChunkElements, count - start);
                if (!buffers.Load(this, name, start, length, checkFinite, out var baseValues))
                {
                    Interlocked.CompareExchange(ref nonFinite, name, null);
                    return;
                }

                var chunk = new ElementwiseChunk(baseValues, buffers.TaskVectors.AsSpan(0, _experts.Count * length), _experts.Count, name, start, Lacking(name));
                action(chunk, output is null ? Span<float>.Empty : output.Slice(start, length), worker, start);
            }
        }

        // Threads of their own: on a busy (or small) thread pool a queued helper would start late and leave its share to the others.
        var helpers = Enumerable.Range(1, (int)Math.Clamp(items, 1, _workers.Length) - 1)
            .Select(w => Task.Factory.StartNew(() => Work(w), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();
        try
        {
            Work(0);
        }
        finally
        {
            Task.WaitAll(helpers);
        }

        if (nonFinite is not null) ReportNonFinite(nonFinite);
    }

    /// <summary>Which experts lack <paramref name="name"/> (null: none), computed once per tensor.</summary>
    internal bool[]? Lacking(string name) => _lacking.GetOrAdd(name, n =>
        _experts.Any(e => !e.Contains(n)) ? [.. _experts.Select(e => !e.Contains(n))] : null);

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool[]?> _lacking = new(StringComparer.Ordinal);

    private static bool IsConvertible(SafeTensorsDType dtype) => FloatEncoding.CanEncode(dtype);

    /// <summary>
    /// A chunk held a NaN or ±∞: the same checks as the tensor path, on whole tensors and in the same order (base, then
    /// experts), give the same message (it counts every bad value of the tensor). Costs one tensor, on error only.
    /// </summary>
    private void ReportNonFinite(string name)
    {
        using var scope = NewDisposeScope();
        MergeTensorInput.EnsureFloatingAndFinite(name, _base.ReadTensor(name), "the base model", null);
        for (int i = 0; i < _experts.Count; i++)
        {
            if (_experts[i].Contains(name))
                MergeTensorInput.EnsureFloatingAndFinite(name, _experts[i].ReadTensor(name), MergeInputException.DescribeExpert(i, _expertNames), i);
        }

        throw new InvalidOperationException($"Tensor '{name}': a non-finite value was seen while reading but not found again.");
    }

    /// <summary>One core's buffers: θ0, the experts' τ one after another, and raw bytes for dtype conversion.</summary>
    private sealed class Worker(int experts)
    {
        public float[] Base { get; } = new float[ElementwiseTensors.ChunkElements];
        public float[] TaskVectors { get; } = new float[experts * ElementwiseTensors.ChunkElements];
        private readonly byte[] _raw = new byte[ElementwiseTensors.ChunkElements * sizeof(double)];

        /// <summary>θ0 of the chunk in <see cref="Base"/> and τ in <see cref="TaskVectors"/>; false when a value is not finite.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool Load(ElementwiseChunkReader reader, string name, long start, int length, bool checkFinite, out ReadOnlySpan<float> baseValues)
        {
            baseValues = default;
            var theta0 = Base.AsSpan(0, length);
            if (!Read(reader._base, name, start, theta0, checkFinite)) return false;
            baseValues = theta0;
            for (int e = 0; e < reader._experts.Count; e++)
            {
                var row = TaskVectors.AsSpan(e * length, length);
                if (reader._experts[e].Contains(name))
                {
                    if (!Read(reader._experts[e], name, start, row, checkFinite)) return false;
                    Subtract(row, theta0);
                }
                else
                {
                    row.Clear(); // the base stands in for a missing tensor: θ0 − θ0 = +0
                }

                if (reader._weights is { } weights && weights[e] != 1f) Scale(row, weights[e]);
            }

            return true;
        }

        /// <summary>values −= θ0, entry by entry (vectorised here rather than by TensorPrimitives: see <see cref="Scale"/>).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Subtract(Span<float> values, ReadOnlySpan<float> theta0)
        {
            var vectors = MemoryMarshal.Cast<float, Vector<float>>(values);
            var bases = MemoryMarshal.Cast<float, Vector<float>>(theta0);
            for (int v = 0; v < vectors.Length; v++) vectors[v] -= bases[v];
            for (int i = vectors.Length * Vector<float>.Count; i < values.Length; i++) values[i] -= theta0[i];
        }

        /// <summary>
        /// values ×= w. The chunk kernels are written out so that they are compiled optimised at once (like every method
        /// here marked so): library code such as TensorPrimitives starts unoptimised in the host's tiered JIT and stays so
        /// for a good part of a merge that lasts seconds.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Scale(Span<float> values, float weight)
        {
            var vectors = MemoryMarshal.Cast<float, Vector<float>>(values);
            for (int v = 0; v < vectors.Length; v++) vectors[v] *= weight;
            for (int i = vectors.Length * Vector<float>.Count; i < values.Length; i++) values[i] *= weight;
        }

        /// <summary>Entries [start, start + destination.Length) as float32 (exact for half types, rounded to nearest for float64).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private bool Read(Checkpoint checkpoint, string name, long start, Span<float> destination, bool checkFinite)
        {
            var dtype = checkpoint.GetEntry(name).DType;
            int size = dtype.ElementSize();
            if (dtype == SafeTensorsDType.F32)
            {
                checkpoint.ReadBytes(name, start * size, MemoryMarshal.AsBytes(destination));
            }
            else
            {
                var raw = _raw.AsSpan(0, destination.Length * size);
                checkpoint.ReadBytes(name, start * size, raw);
                FloatEncoding.Decode(raw, dtype, destination);
            }

            return !checkFinite || TensorReadAhead.AllFinite(destination);
        }
    }
}
