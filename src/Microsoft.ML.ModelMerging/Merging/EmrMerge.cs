using System.Numerics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// EMR-Merging (Huang et al. 2024, "EMR-Merging: Tuning-Free High-Performance Model Merging"): one unified task
/// vector plus a mask and a rescaler per task; task t's model is θ0 + λ_t·(M_t ⊙ τ_uni) (task known at inference).
/// </summary>
/// <remarks>
/// Per entry: γ = sign(Σ_i τ_i); τ_uni = γ · max{|τ_i| : τ_i has sign γ} (0 where γ = 0 or no task agrees);
/// M_t = (τ_t ⊙ τ_uni &gt; 0). Over the whole model: λ_t = Σ|τ_t| / Σ|M_t ⊙ τ_uni|, summed over every merged tensor
/// in one statistics pass (the paper's formula; the authors' code sums per-tensor means instead and breaks γ = 0
/// as −1). λ_t = 1 when task t's mask is empty, where any value gives the same weights.
/// The shared <see cref="MergedTensor.Merged"/> is θ0 + τ_uni.
/// </remarks>
public sealed class EmrMerge : MergeMethodBase, ITaskSpecificElementwiseMethod
{
    private double[] _taskMagnitudes = [];
    private double[] _maskedUnifiedMagnitudes = [];
    private double[]? _scales;
    private readonly Dictionary<(string Tensor, long Start), double[]> _chunkSums = [];

    /// <summary>The registry entry: name <c>emr</c>, no parameters.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "emr",
        "EMR-Merging: unified task vector (elected sign, largest agreeing magnitude) plus a mask and a rescaler per task (task known at inference).",
        [],
        _ => new EmrMerge());

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <inheritdoc/>
    /// <remarks>One pass, which gathers the sums behind λ_t.</remarks>
    public override int StatisticsPassCount => 1;

    /// <inheritdoc/>
    public override bool ProducesTaskSpecificWeights => true;

    /// <summary>λ_t per task, once the statistics pass is done.</summary>
    public IReadOnlyList<double>? TaskScales => _scales;

    /// <inheritdoc/>
    protected override void OnBegin(int expertCount)
    {
        _taskMagnitudes = new double[expertCount];
        _maskedUnifiedMagnitudes = new double[expertCount];
        _scales = null;
        _chunkSums.Clear();
    }

    /// <inheritdoc/>
    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        IElementwiseMergeMethod self = this;
        var accumulator = self.CreateAccumulator(pass);
        ElementwiseTensors.Accumulate(accumulator, input);
        self.AddAccumulated(pass, accumulator);
    }

    /// <summary>
    /// Sums chunk by chunk in tensor-name then position order: the float64 totals do not depend on how many threads
    /// took which chunks, nor on the driver.
    /// </summary>
    protected override void CompletePass(int pass)
    {
        Array.Clear(_taskMagnitudes);
        Array.Clear(_maskedUnifiedMagnitudes);
        int experts = _taskMagnitudes.Length;
        foreach (var (_, sums) in _chunkSums.OrderBy(p => p.Key.Tensor, StringComparer.Ordinal).ThenBy(p => p.Key.Start))
        {
            for (int e = 0; e < experts; e++)
            {
                _taskMagnitudes[e] += sums[e];
                _maskedUnifiedMagnitudes[e] += sums[experts + e];
            }
        }

        _chunkSums.Clear();
        _scales = [.. _taskMagnitudes.Zip(_maskedUnifiedMagnitudes, (task, masked) => masked > 0 ? task / masked : 1.0)];
    }

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input) => ElementwiseTensors.MergeTaskSpecific(this, input);

    bool IElementwiseMergeMethod.IsElementwise => true;

    IReadOnlyList<double> ITaskSpecificElementwiseMethod.TaskScales(int experts) =>
        _scales ?? throw new InvalidOperationException("EMR: the statistics pass is not finished.");

    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged) =>
        ElementwiseTensors.MergeOnly(this, chunk, merged);

    /// <summary>
    /// Per entry, in float32: γ = sign(Σ τ_t) (expert order), τ_uni = γ·max{|τ_t| : τ_t·γ &gt; 0} (0 when none),
    /// M_t = τ_t·τ_uni &gt; 0 (the float32 product, which may underflow to 0), θ = θ0 + τ_uni.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void ITaskSpecificElementwiseMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged, Span<float> shared, Span<byte> masks)
    {
        int n = chunk.Length, experts = chunk.ExpertCount;
        int width = Vector<float>.Count;
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var sum = new Vector<float>(chunk.TaskVector(0).Slice(j));
            for (int e = 1; e < experts; e++) sum += new Vector<float>(chunk.TaskVector(e).Slice(j));
            var elected = Vector.ConditionalSelect(Vector.GreaterThan(sum, Vector<float>.Zero), Vector<float>.One,
                Vector.ConditionalSelect(Vector.LessThan(sum, Vector<float>.Zero), -Vector<float>.One, Vector<float>.Zero));
            var largest = Vector<float>.Zero;
            for (int e = 0; e < experts; e++)
            {
                var tau = new Vector<float>(chunk.TaskVector(e).Slice(j));
                largest = Vector.Max(largest, Vector.ConditionalSelect(Vector.GreaterThan(tau * elected, Vector<float>.Zero), Vector.Abs(tau), Vector<float>.Zero));
            }

            var unified = elected * largest;
            unified.CopyTo(shared.Slice(j));
            (new Vector<float>(chunk.Base.Slice(j)) + unified).CopyTo(merged.Slice(j));
            for (int e = 0; e < experts; e++)
                MaskBytes.Store(Vector.GreaterThan(new Vector<float>(chunk.TaskVector(e).Slice(j)) * unified, Vector<float>.Zero), masks.Slice((e * n) + j));
        }

        for (; j < n; j++)
        {
            float sum = chunk.TaskVector(0)[j];
            for (int e = 1; e < experts; e++) sum += chunk.TaskVector(e)[j];
            float elected = sum > 0 ? 1f : sum < 0 ? -1f : 0f;
            float largest = 0;
            for (int e = 0; e < experts; e++)
            {
                float tau = chunk.TaskVector(e)[j];
                if (tau * elected > 0) largest = Math.Max(largest, Math.Abs(tau));
            }

            float unified = elected * largest;
            shared[j] = unified;
            merged[j] = chunk.Base[j] + unified;
            for (int e = 0; e < experts; e++) masks[(e * n) + j] = chunk.TaskVector(e)[j] * unified > 0 ? (byte)1 : (byte)0;
        }
    }

    bool ITaskSpecificElementwiseMethod.ScalesFromMerge => true;

    void ITaskSpecificElementwiseMethod.AccumulateMerged(IChunkAccumulator accumulator, in ElementwiseChunk chunk, ReadOnlySpan<float> shared, ReadOnlySpan<byte> masks) =>
        ((Accumulator)accumulator).AddMerged(chunk, shared, masks);

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) => new Accumulator(this);

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator)
    {
        foreach (var (key, sums) in ((Accumulator)accumulator).ChunkSums) _chunkSums[key] = sums;
    }

    /// <summary>Per chunk: Σ|τ_t| then Σ|M_t ⊙ τ_uni| per task, each summed in entry order in float64.</summary>
    private sealed class Accumulator(EmrMerge method) : IChunkAccumulator
    {
        private float[] _merged = [];
        private float[] _shared = [];
        private byte[] _masks = [];

        public List<((string Tensor, long Start) Key, double[] Sums)> ChunkSums { get; } = [];

        public void Accumulate(in ElementwiseChunk chunk)
        {
            int n = chunk.Length, experts = chunk.ExpertCount;
            if (_merged.Length < n) (_merged, _shared) = (new float[n], new float[n]);
            if (_masks.Length < experts * n) _masks = new byte[experts * n];
            ITaskSpecificElementwiseMethod kernel = method;
            kernel.MergeChunk(chunk, _merged.AsSpan(0, n), _shared.AsSpan(0, n), _masks.AsSpan(0, experts * n));
            AddMerged(chunk, _shared.AsSpan(0, n), _masks.AsSpan(0, experts * n));
        }

        /// <summary>The sums of a chunk already merged (the streaming driver's single read).</summary>
        /// <remarks>
        /// Vectorised: float64 lanes summed in a fixed order (same bits for a chunk wherever it is merged). M_t is taken as
        /// the kernel decides it, τ_t·τ_uni &gt; 0, on vectors rather than from the mask bytes (no unpredictable branch).
        /// </remarks>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void AddMerged(in ElementwiseChunk chunk, ReadOnlySpan<float> shared, ReadOnlySpan<byte> masks)
        {
            int n = chunk.Length, experts = chunk.ExpertCount;
            var sums = new double[2 * experts];
            int width = Vector<float>.Count;
            for (int e = 0; e < experts; e++)
            {
                var tau = chunk.TaskVector(e);
                Vector<double> taskLow = Vector<double>.Zero, taskHigh = Vector<double>.Zero, maskedLow = Vector<double>.Zero, maskedHigh = Vector<double>.Zero;
                int j = 0;
                for (; j + width <= n; j += width)
                {
                    var t = new Vector<float>(tau.Slice(j));
                    var unified = new Vector<float>(shared.Slice(j));
                    Vector.Widen(Vector.Abs(t), out var low, out var high);
                    (taskLow, taskHigh) = (taskLow + low, taskHigh + high);
                    var kept = Vector.ConditionalSelect(Vector.GreaterThan(t * unified, Vector<float>.Zero), Vector.Abs(unified), Vector<float>.Zero);
                    Vector.Widen(kept, out low, out high);
                    (maskedLow, maskedHigh) = (maskedLow + low, maskedHigh + high);
                }

                double task = Vector.Sum(taskLow + taskHigh), masked = Vector.Sum(maskedLow + maskedHigh);
                for (; j < n; j++)
                {
                    task += Math.Abs(tau[j]);
                    if (masks[(e * n) + j] != 0) masked += Math.Abs(shared[j]);
                }

                (sums[e], sums[experts + e]) = (task, masked);
            }

            ChunkSums.Add(((chunk.TensorName, chunk.Start), sums));
        }
    }
}
