using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each task-vector entry with probability p and
/// rescale the survivors, τ̃_i = (m ⊙ τ_i)/(1 − p) with m ~ Bernoulli(1 − p), then merge τ̃ with task arithmetic or TIES.
/// </summary>
/// <remarks>
/// <para>Entry j of expert i's tensor n is kept when a counter-based hash of (seed, i, n, j) — two rounds of MurmurHash3's
/// 32-bit finaliser keyed by a stable hash of (seed, i, n) — read as a 24-bit uniform u satisfies u ≥ p (p rounded up
/// to a multiple of 2^-24). The mask is a pure function of where the entry is: the same seed gives the same bytes
/// whatever order tensors are processed in, however a tensor is cut into chunks, on any number of threads, and every
/// statistics pass sees the same τ̃ without storing it.</para>
/// <para>With task arithmetic or TIES's global trim the drop runs inside their chunk kernels (no tensor-sized
/// temporaries, no libtorch call); with TIES's per-tensor trim the task vectors of one tensor are dropped in place in the
/// tensor's buffers (<see cref="TensorBuffers"/>, in either driver), then merged.</para>
/// </remarks>
public sealed class DareMerge : MergeMethodBase, IElementwiseMergeMethod, ITensorwiseMergeMethod
{
    /// <summary>Default drop rate p, 0.5.</summary>
    public const double DefaultDropRate = 0.5;

    /// <summary>2^24: the resolution of the uniform draws.</summary>
    private const double DrawScale = 1 << 24;

    private readonly uint _dropBelow;
    private readonly float _rescale;

    [ThreadStatic]
    private static float[]? t_dropped;

    /// <summary>Creates DARE in front of another merge.</summary>
    /// <param name="dropRate">p, the probability of dropping each task-vector entry, in [0, 1).</param>
    /// <param name="seed">Seed of the drop masks: an entry's fate depends only on (seed, expert, tensor name, entry index).</param>
    /// <param name="then">The merge applied to the dropped, rescaled task vectors (task arithmetic or TIES in the registry).</param>
    public DareMerge(double dropRate, long seed, IMergeMethod then)
    {
        ArgumentNullException.ThrowIfNull(then);
        if (!(dropRate >= 0 && dropRate < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(dropRate), dropRate, "The drop rate p must be in [0, 1).");
        }

        DropRate = dropRate;
        Seed = seed;
        Then = then;
        _dropBelow = (uint)Math.Ceiling(dropRate * DrawScale);
        _rescale = (float)(1 - dropRate); // τ / (1 − p) as a float32 tensor divided by a scalar computes it
    }

    /// <summary>The registry entry: name <c>dare</c>, parameters <c>drop-rate</c>, <c>seed</c>, <c>then</c> and TIES's (<c>lambda</c>, <c>keep</c>, <c>trim</c>, <c>merge-func</c>).</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "dare",
        "DARE: randomly drop task-vector entries with probability p, rescale the rest by 1/(1−p), then task arithmetic or TIES.",
        [
            MergeParameterSpec.Number("drop-rate", DefaultDropRate, "probability p of dropping each task-vector entry", 0, 1, maximumInclusive: false),
            MergeParameterSpec.Integer("seed", 0, "seed of the random drop masks"),
            MergeParameterSpec.Choice("then", "task-arithmetic", "merge applied to the dropped task vectors", "task-arithmetic", "ties"),
            .. TiesMerge.Parameters.Select(spec => spec.Name == "lambda"
                ? spec
                : spec.WithDescription(spec.Description + " (then=ties only)")),
        ],
        parameters =>
        {
            double lambda = parameters.GetNumber("lambda");
            IMergeMethod then = parameters.GetChoice("then") == "ties"
                ? new TiesMerge(
                    lambda,
                    parameters.GetNumber("keep"),
                    TiesMerge.ParseTrim(parameters.GetChoice("trim")),
                    TiesMerge.ParseMergeFunction(parameters.GetChoice("merge-func")))
                : new TaskArithmeticMerge(lambda);
            return new DareMerge(parameters.GetNumber("drop-rate"), parameters.GetInteger("seed"), then);
        });

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <inheritdoc/>
    /// <remarks>The passes of <see cref="Then"/>.</remarks>
    public override int StatisticsPassCount => Then.StatisticsPassCount;

    /// <inheritdoc/>
    public override bool ProducesTaskSpecificWeights => Then.ProducesTaskSpecificWeights;

    /// <summary>p.</summary>
    public double DropRate { get; }

    /// <summary>Seed of the drop masks.</summary>
    public long Seed { get; }

    /// <summary>The merge applied to the dropped, rescaled task vectors.</summary>
    public IMergeMethod Then { get; }

    /// <summary>The merge applied to the dropped vectors when it runs chunk by chunk; null otherwise.</summary>
    private IElementwiseMergeMethod? ElementwiseThen =>
        Then is IElementwiseMergeMethod { IsElementwise: true } then && !Then.ProducesTaskSpecificWeights ? then : null;

    bool IElementwiseMergeMethod.IsElementwise => ElementwiseThen is not null;

    /// <summary>The merge applied to the dropped vectors when it merges tensor by tensor from buffers; null otherwise.</summary>
    private ITensorwiseMergeMethod? TensorwiseThen =>
        ElementwiseThen is null && Then is ITensorwiseMergeMethod { IsTensorwise: true } then ? then : null;

    bool ITensorwiseMergeMethod.IsTensorwise => TensorwiseThen is not null;

    /// <summary>Drops and rescales every task vector in the buffers, in place, then lets the next method merge them.</summary>
    void ITensorwiseMergeMethod.MergeTensor(TensorBuffers tensor, FloatSegments output)
    {
        var then = TensorwiseThen ?? throw new InvalidOperationException($"DARE then {Then.Name}: the merge does not run tensor by tensor.");
        var keys = Enumerable.Range(0, tensor.ExpertCount).Select(e => StableSeed.Derive(Seed, e, tensor.Name)).ToArray();
        tensor.TransformTaskVectors((expert, values, start) => Drop(values, values, keys[expert], start));
        then.MergeTensor(tensor, output);
    }

    /// <summary>Whether entry <paramref name="index"/> of the flattened tensor <paramref name="tensorName"/> survives in expert <paramref name="expertIndex"/>'s task vector.</summary>
    public bool Keeps(int expertIndex, string tensorName, long index)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return Draw(StableSeed.Derive(Seed, expertIndex, tensorName), index) >= _dropBelow;
    }

    /// <summary>τ̃ = (m ⊙ τ)/(1 − p) for expert <paramref name="expertIndex"/>'s tensor <paramref name="tensorName"/>; the caller owns it.</summary>
    public Tensor DropAndRescale(Tensor taskVector, int expertIndex, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(taskVector);
        ArgumentNullException.ThrowIfNull(tensorName);
        if (!taskVector.is_floating_point())
            throw new ArgumentException($"Tensor '{tensorName}': DARE drops floating task vectors, got {taskVector.dtype}.", nameof(taskVector));
        using var scope = NewDisposeScope();
        var values = taskVector.to(ScalarType.Float32, CPU, copy: true).contiguous();
        ulong key = StableSeed.Derive(Seed, expertIndex, tensorName);
        long count = values.numel();
        using (var flat = values.view(-1))
        {
            // In place, segment by segment (span access is limited to 2 GiB).
            for (long segment = 0; segment < count; segment += FloatSegments.SegmentElements)
            {
                long length = Math.Min(FloatSegments.SegmentElements, count - segment);
                using var part = flat.narrow(0, segment, length);
                var span = MemoryMarshal.Cast<byte, float>(part.bytes);
                for (int start = 0; start < span.Length; start += ElementwiseTensors.ChunkElements)
                {
                    var chunk = span.Slice(start, Math.Min(ElementwiseTensors.ChunkElements, span.Length - start));
                    Drop(chunk, chunk, key, segment + start);
                }
            }
        }

        return values.to(taskVector.dtype, taskVector.device).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    protected override void OnBegin(int expertCount) => Then.Begin(expertCount);

    /// <inheritdoc/>
    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        if (ElementwiseThen is not null)
        {
            IElementwiseMergeMethod self = this;
            var accumulator = self.CreateAccumulator(pass);
            ElementwiseTensors.Accumulate(accumulator, input);
            self.AddAccumulated(pass, accumulator);
            return;
        }

        using var dropped = DropAll(input);
        Then.AccumulateStatistics(pass, dropped);
    }

    /// <inheritdoc/>
    protected override void CompletePass(int pass) => Then.FinishPass(pass);

    /// <inheritdoc/>
    public override bool NeedsPass(int pass) => Then.NeedsPass(pass);

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input)
    {
        if (ElementwiseThen is not null) return new MergedTensor(ElementwiseTensors.Merge(this, input));
        if (TensorwiseThen is not null) return new MergedTensor(TensorBuffers.Merge(this, input));
        using var dropped = DropAll(input);
        return Then.MergeTensor(dropped);
    }

    int? IElementwiseMergeMethod.SampledChunks(int pass) => ElementwiseThenOrThrow.SampledChunks(pass);

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) =>
        new DroppingAccumulator(this, ElementwiseThenOrThrow.CreateAccumulator(pass));

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator) =>
        ElementwiseThenOrThrow.AddAccumulated(pass, accumulator is IDroppingWrapper wrapper ? wrapper.Inner
            : throw new ArgumentException($"Not an accumulator of DARE pass {pass}.", nameof(accumulator)));

    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged)
    {
        var then = ElementwiseThenOrThrow;
        var dropped = DropChunk(chunk, ref t_dropped);
        then.MergeChunk(dropped, merged);
    }

    DeferredLastPass? IElementwiseMergeMethod.BeginDeferredLastPass(long maxPatches) =>
        ElementwiseThenOrThrow.BeginDeferredLastPass(maxPatches) is { } inner ? new DroppingDeferredPass(this, inner) : null;

    private IElementwiseMergeMethod ElementwiseThenOrThrow =>
        ElementwiseThen ?? throw new InvalidOperationException($"DARE then {Then.Name}: the merge does not run chunk by chunk.");

    /// <summary>The chunk with every task vector dropped and rescaled, held in <paramref name="buffer"/> (grown when needed).</summary>
    private ElementwiseChunk DropChunk(in ElementwiseChunk chunk, ref float[]? buffer)
    {
        int n = chunk.Length;
        int values = chunk.ExpertCount * n;
        if (buffer is null || buffer.Length < values) buffer = new float[Math.Max(values, chunk.ExpertCount * ElementwiseTensors.ChunkElements)];
        for (int e = 0; e < chunk.ExpertCount; e++)
            Drop(chunk.TaskVector(e), buffer.AsSpan(e * n, n), StableSeed.Derive(Seed, e, chunk.TensorName), chunk.Start);
        return chunk.WithTaskVectors(buffer.AsSpan(0, values));
    }

    private MergeTensorInput DropAll(MergeTensorInput input) =>
        input.WithOwnedTaskVectors([.. input.TaskVectors.Select((taskVector, i) => DropAndRescale(taskVector, i, input.Name))]);

    /// <summary>
    /// destination[j] = source[j] / (1 − p) where entry <paramref name="start"/> + j is kept, else +0. <paramref name="start"/>
    /// is a multiple of the vector width or the spans are short (true of every chunk), so a vector never straddles 2^32.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Drop(ReadOnlySpan<float> source, Span<float> destination, ulong key, long start)
    {
        int n = source.Length;
        int width = Vector<float>.Count;
        int j = 0;
        if (start % width == 0)
        {
            var lanes = LaneOffsets;
            var dropBelow = new Vector<uint>(_dropBelow);
            var rescale = new Vector<float>(_rescale);
            for (; j + width <= n; j += width)
            {
                long index = start + j;
                var draws = Draws(key, (uint)index, (uint)((ulong)index >> 32), lanes);
                var kept = Vector.AsVectorSingle(Vector.GreaterThanOrEqual(draws, dropBelow));
                Vector.ConditionalSelect(kept, new Vector<float>(source.Slice(j)) / rescale, Vector<float>.Zero).CopyTo(destination.Slice(j));
            }
        }

        for (; j < n; j++)
            destination[j] = Draw(key, start + j) >= _dropBelow ? source[j] / _rescale : 0f;
    }

    private static readonly Vector<uint> LaneOffsets = CreateLaneOffsets();

    private static Vector<uint> CreateLaneOffsets()
    {
        var offsets = new uint[Vector<uint>.Count];
        for (int i = 0; i < offsets.Length; i++) offsets[i] = (uint)i;
        return new Vector<uint>(offsets);
    }

    /// <summary>The 24-bit draw of entry <paramref name="index"/>: Mix(Mix(low ^ k0) ^ k1 ^ high·φ) >> 8.</summary>
    private static uint Draw(ulong key, long index)
    {
        uint low = (uint)index, high = (uint)((ulong)index >> 32);
        uint x = Mix(low ^ (uint)key);
        x = Mix(x ^ (uint)(key >> 32) ^ (high * 0x9E37_79B9u));
        return x >> 8;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> Draws(ulong key, uint low, uint high, Vector<uint> lanes)
    {
        var x = Mix((new Vector<uint>(low) + lanes) ^ new Vector<uint>((uint)key));
        x = Mix(x ^ new Vector<uint>((uint)(key >> 32) ^ (high * 0x9E37_79B9u)));
        return Vector.ShiftRightLogical(x, 8);
    }

    /// <summary>MurmurHash3's 32-bit finaliser (a bijection).</summary>
    private static uint Mix(uint x)
    {
        x ^= x >> 16;
        x *= 0x85EB_CA6Bu;
        x ^= x >> 13;
        x *= 0xC2B2_AE35u;
        x ^= x >> 16;
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> Mix(Vector<uint> x)
    {
        x ^= Vector.ShiftRightLogical(x, 16);
        x *= new Vector<uint>(0x85EB_CA6Bu);
        x ^= Vector.ShiftRightLogical(x, 13);
        x *= new Vector<uint>(0xC2B2_AE35u);
        x ^= Vector.ShiftRightLogical(x, 16);
        return x;
    }

    /// <summary>An accumulator or worker of the inner method that DARE feeds dropped chunks.</summary>
    private interface IDroppingWrapper
    {
        IChunkAccumulator Inner { get; }
    }

    /// <summary>One thread's statistics of the inner method, over dropped chunks.</summary>
    private sealed class DroppingAccumulator(DareMerge owner, IChunkAccumulator inner) : IChunkAccumulator, IDroppingWrapper
    {
        private float[]? _buffer;

        public IChunkAccumulator Inner { get; } = inner;

        public void Accumulate(in ElementwiseChunk chunk) => Inner.Accumulate(owner.DropChunk(chunk, ref _buffer));
    }

    /// <summary>The inner method's deferred last pass, over dropped chunks.</summary>
    private sealed class DroppingDeferredPass(DareMerge owner, DeferredLastPass inner) : DeferredLastPass
    {
        public override bool Overflowed => inner.Overflowed;

        public override IDeferredChunkMerger CreateWorker() => new DroppingDeferredWorker(owner, inner.CreateWorker());

        public override IEnumerable<(int Tensor, long Index, float Value)> Patches(IEnumerable<IDeferredChunkMerger> workers) =>
            inner.Patches(workers.Select(w => (IDeferredChunkMerger)((DroppingDeferredWorker)w).Inner));
    }

    private sealed class DroppingDeferredWorker(DareMerge owner, IDeferredChunkMerger inner) : IDeferredChunkMerger, IDroppingWrapper
    {
        private float[]? _buffer;

        public IChunkAccumulator Inner => inner;

        public void Accumulate(in ElementwiseChunk chunk) => inner.Accumulate(owner.DropChunk(chunk, ref _buffer));

        public void MergeChunk(in ElementwiseChunk chunk, Span<float> merged, int tensor, long start) =>
            inner.MergeChunk(owner.DropChunk(chunk, ref _buffer), merged, tensor, start);
    }
}
