using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// One tensor's θ0 and every expert's τ_i as float32, in buffers allocated once at the size of the largest merged tensor
/// and reused for every tensor: what a method that needs statistics of the whole tensor before merging it (TIES with a
/// per-tensor trim) works on. Passes over the tensor view these buffers chunk by chunk in place, on every core, so a
/// second or third look at a tensor costs a read of memory, not a read of the checkpoints or a copy into chunk buffers.
/// Memory: (experts + 1) × the largest tensor, float32.
/// </summary>
internal sealed class TensorBuffers
{
    private readonly FloatSegments _base;
    private readonly FloatSegments[] _rows;

    public TensorBuffers(int experts, long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(experts);
        _base = new FloatSegments(capacity);
        _rows = [.. Enumerable.Range(0, experts).Select(_ => new FloatSegments(capacity))];
    }

    /// <summary>The tensor held now.</summary>
    public string Name { get; private set; } = "";

    /// <summary>Its entries.</summary>
    public long Count => _base.Count;

    public int ExpertCount => _rows.Length;

    /// <summary>Which experts lack the tensor (their τ is +0 and must not enter statistics); null: none.</summary>
    public bool[]? Lacking { get; private set; }

    /// <summary>Expert <paramref name="expert"/>'s whole τ, for a tensor that fits one segment (2^28 entries).</summary>
    public ReadOnlySpan<float> TaskVector(int expert) => _rows[expert].Slice(0, checked((int)Count));

    /// <summary>
    /// A sample of expert <paramref name="expert"/>'s τ into <paramref name="destination"/>: runs of
    /// <see cref="SampleRun"/> consecutive entries at evenly spaced starts (every entry when the tensor is no larger).
    /// Returns how many values were written.
    /// </summary>
    public int SampleTaskVector(int expert, Span<float> destination)
    {
        var row = _rows[expert];
        if (Count <= destination.Length)
        {
            row.Slice(0, (int)Count).CopyTo(destination); // a span holds less than a segment: one piece
            return (int)Count;
        }

        int runs = destination.Length / SampleRun;
        long spacing = Count / runs; // ≥ SampleRun, since Count > runs · SampleRun
        for (int r = 0; r < runs; r++)
        {
            long start = r * spacing;
            // A run never straddles two segments: segments are multiples of the run length apart.
            row.Slice(start - (start % SampleRun), SampleRun).CopyTo(destination.Slice(r * SampleRun, SampleRun));
        }

        return runs * SampleRun;
    }

    /// <summary>Consecutive entries per run of <see cref="SampleTaskVector"/>.</summary>
    public const int SampleRun = 64;

    /// <summary>Reads tensor <paramref name="name"/> of every input into the buffers, on every core (values checked finite when asked).</summary>
    public void Load(ElementwiseChunkReader reader, string name, long count, bool checkFinite)
    {
        Begin(name, count, reader.Lacking(name));
        reader.ForEachChunk(name, null, (in ElementwiseChunk chunk, Span<float> _, int _, long start) =>
        {
            chunk.Base.CopyTo(_base.Slice(start, chunk.Length));
            for (int e = 0; e < chunk.ExpertCount; e++) chunk.TaskVector(e).CopyTo(_rows[e].Slice(start, chunk.Length));
        }, checkFinite);
    }

    /// <summary>Copies an in-memory tensor's θ0 and τ_i into the buffers (the tensor-at-a-time path).</summary>
    public void Load(MergeTensorInput input)
    {
        if (input.Base.device_type != TorchSharp.DeviceType.CPU)
            throw new NotSupportedException($"Tensor '{input.Name}': tensor-wise merging runs on CPU tensors.");
        Begin(input.Name, input.Base.numel(), input.LackingExperts);
        using var scope = NewDisposeScope();
        Copy(input.Base, _base);
        for (int e = 0; e < _rows.Length; e++) Copy(input.TaskVectors[e], _rows[e]);
    }

    /// <summary>
    /// A tensor-wise method on an in-memory tensor (the tensor-at-a-time path): the streaming driver's code on a copy of
    /// the tensor's values, so both drivers give the same bits. Returns the merged weights, float32, of the base's shape.
    /// </summary>
    public static Tensor Merge(ITensorwiseMergeMethod method, MergeTensorInput input)
    {
        var buffers = new TensorBuffers(input.ExpertCount, input.Base.numel());
        buffers.Load(input);
        var output = new FloatSegments(buffers.Count);
        output.Resize(buffers.Count);
        method.MergeTensor(buffers, output);
        return output.ToTensor(input.Base.shape);
    }

    private void Begin(string name, long count, bool[]? lacking)
    {
        Name = name;
        Lacking = lacking;
        _base.Resize(count);
        foreach (var row in _rows) row.Resize(count);
    }

    private static void Copy(Tensor source, FloatSegments destination)
    {
        var flat = source.to_type(ScalarType.Float32).contiguous().reshape(-1);
        for (long start = 0; start < destination.Count; start += FloatSegments.SegmentElements)
        {
            int length = (int)Math.Min(FloatSegments.SegmentElements, destination.Count - start);
            MemoryMarshal.Cast<byte, float>(flat.narrow(0, start, length).bytes).CopyTo(destination.Slice(start, length));
        }
    }

    /// <summary>
    /// Visits every chunk of the tensor held, viewed in place, on up to <see cref="ElementwiseTensors.ParallelWorkers"/>
    /// threads by contiguous ranges of chunks; each thread gathers into its own partial from <paramref name="createPartial"/>
    /// and <paramref name="fold"/> takes the partials one at a time. A chunk's slice of <paramref name="output"/> is passed
    /// along when given (each chunk writes only its own slice, so the bits do not depend on the threads).
    /// </summary>
    public void ForEachChunk<T>(FloatSegments? output, Func<T> createPartial, PartialVisitor<T> visit, Action<T> fold)
    {
        long count = Count;
        long chunks = (count + ElementwiseTensors.ChunkElements - 1) / ElementwiseTensors.ChunkElements;
        int threads = (int)Math.Clamp(count < 8L * ElementwiseTensors.ChunkElements ? 1 : chunks, 1, ElementwiseTensors.ParallelWorkers);
        var gate = new object();
        void Work(int worker)
        {
            var partial = createPartial();
            // Contiguous ranges, a few per thread, interleaved so the work is even.
            long perRange = Math.Max(1, (chunks + (4L * threads) - 1) / (4L * threads));
            for (long first = worker * perRange; first < chunks; first += threads * perRange)
            {
                for (long c = first; c < Math.Min(chunks, first + perRange); c++)
                {
                    long start = c * ElementwiseTensors.ChunkElements;
                    int length = (int)Math.Min(ElementwiseTensors.ChunkElements, count - start);
                    var chunk = new ElementwiseChunk(_base, _rows, start, length, Name, Lacking);
                    visit(partial, chunk, output is null ? Span<float>.Empty : output.Slice(start, length));
                }
            }

            lock (gate) fold(partial);
        }

        if (threads == 1)
        {
            Work(0);
            return;
        }

        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, Work);
    }

    /// <summary>
    /// Rewrites every expert's τ in place, chunk by chunk on every core: <paramref name="transform"/> gets the expert, a
    /// chunk of its row and the index of the chunk's first entry (chunks start at multiples of
    /// <see cref="ElementwiseTensors.ChunkElements"/>).
    /// </summary>
    public void TransformTaskVectors(RowTransform transform)
    {
        long count = Count;
        long chunks = (count + ElementwiseTensors.ChunkElements - 1) / ElementwiseTensors.ChunkElements;
        int threads = (int)Math.Clamp(count < 8L * ElementwiseTensors.ChunkElements ? 1 : chunks, 1, ElementwiseTensors.ParallelWorkers);
        long items = chunks * _rows.Length;
        long next = -1;
        void Work(int _)
        {
            long item;
            while ((item = Interlocked.Increment(ref next)) < items)
            {
                int expert = (int)(item % _rows.Length);
                long start = item / _rows.Length * ElementwiseTensors.ChunkElements;
                transform(expert, _rows[expert].Slice(start, (int)Math.Min(ElementwiseTensors.ChunkElements, count - start)), start);
            }
        }

        if (threads == 1) Work(0);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, Work);
    }

    /// <summary>Rewrites a chunk of expert <paramref name="expert"/>'s τ that starts at entry <paramref name="start"/>.</summary>
    public delegate void RowTransform(int expert, Span<float> values, long start);

    /// <summary>Visits one chunk, gathering into the thread's partial.</summary>
    public delegate void PartialVisitor<in T>(T partial, in ElementwiseChunk chunk, Span<float> output);
}
