using System.Numerics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// TALL masks (Wang et al. 2024, "Localizing Task Information for Improved Model Merging and Compression"): store
/// the multi-task vector τ_MTL = Σ_i τ_i once plus one binary mask per task, m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|, and
/// rebuild task t's model as θ_t = θ0 + m_t ⊙ τ_MTL when the task is known at inference.
/// </summary>
/// <remarks>
/// The shared <see cref="MergedTensor.Merged"/> is task arithmetic, θ0 + λ·τ_MTL, for when the task is unknown.
/// The paper picks λ_t per task on validation data from {0.2, …, 0.6}; give one value or one per task. The comparison
/// is ≥ as in the paper (the authors' code uses &gt;); λ_t·|τ_MTL − τ_t| is computed in float32.
/// </remarks>
public sealed class TallMasksMerge : MergeMethodBase, ITaskSpecificElementwiseMethod
{
    /// <summary>Default λ of the task-agnostic model θ0 + λ·τ_MTL, 0.3.</summary>
    public const double DefaultLambda = 0.3;
    /// <summary>Default λ_t of the masks, 0.4.</summary>
    public const double DefaultTallLambda = 0.4;

    /// <summary>Creates the method with its settings.</summary>
    /// <param name="lambda">λ of the task-agnostic model θ0 + λ·τ_MTL; finite.</param>
    /// <param name="tallLambdas">λ_t of the masks: one value for every task or one per task (default 0.4); each finite and ≥ 0.</param>
    public TallMasksMerge(double lambda = DefaultLambda, IReadOnlyList<double>? tallLambdas = null)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        Lambda = lambda;
        TallLambdas = ValidateTallLambdas(tallLambdas);
    }

    internal static MergeParameterSpec TallLambdaParameter { get; } = MergeParameterSpec.NumberPerExpert(
        "tall-lambda", DefaultTallLambda, "λ_t of the masks m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|", 0);

    /// <summary>The registry entry: name <c>tall-masks</c>, parameters <c>lambda</c> and <c>tall-lambda</c>.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "tall-masks",
        "TALL masks: shared τ_MTL = Σ τ_i plus a mask per task; task t's model is θ0 + m_t ⊙ τ_MTL (task known at inference).",
        [
            MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the task-agnostic model θ0 + λ·τ_MTL"),
            TallLambdaParameter,
        ],
        parameters => new TallMasksMerge(parameters.GetNumber("lambda"), parameters.GetNumberPerExpert("tall-lambda")));

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <inheritdoc/>
    public override bool ProducesTaskSpecificWeights => true;

    /// <summary>λ of the task-agnostic model θ0 + λ·τ_MTL, stored as the merged weights beside the masks.</summary>
    public double Lambda { get; }

    /// <summary>λ_t: one value for every task or one per task.</summary>
    public IReadOnlyList<double> TallLambdas { get; }

    internal static IReadOnlyList<double> ValidateTallLambdas(IReadOnlyList<double>? tallLambdas)
    {
        if (tallLambdas is null)
        {
            return [DefaultTallLambda];
        }

        if (tallLambdas.Count == 0 || tallLambdas.Any(value => !(value >= 0) || !double.IsFinite(value)))
        {
            throw new ArgumentException("tall-lambda needs one or more finite values ≥ 0.", nameof(tallLambdas));
        }

        return [.. tallLambdas];
    }

    internal static void EnsureTallLambdaCount(string methodName, IReadOnlyList<double> tallLambdas, int expertCount)
    {
        if (tallLambdas.Count != 1 && tallLambdas.Count != expertCount)
        {
            throw new ArgumentException(
                $"Merge method '{methodName}': tall-lambda has {tallLambdas.Count} values for {expertCount} expert(s); give one value or one per expert.");
        }
    }

    /// <inheritdoc/>
    protected override void OnBegin(int expertCount) => EnsureTallLambdaCount(Name, TallLambdas, expertCount);

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input) => ElementwiseTensors.MergeTaskSpecific(this, input);

    bool IElementwiseMergeMethod.IsElementwise => true;

    IReadOnlyList<double> ITaskSpecificElementwiseMethod.TaskScales(int experts) => [.. Enumerable.Repeat(1.0, experts)];

    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged) =>
        ElementwiseTensors.MergeOnly(this, chunk, merged);

    /// <summary>
    /// Per entry: τ_MTL = Σ τ_t (expert order, float32), m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t| (float32 product), θ = θ0 + λ·τ_MTL.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void ITaskSpecificElementwiseMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged, Span<float> shared, Span<byte> masks)
    {
        int n = chunk.Length, experts = chunk.ExpertCount;
        float lambda = (float)Lambda;
        Span<float> tall = stackalloc float[experts];
        for (int e = 0; e < experts; e++) tall[e] = (float)(TallLambdas.Count == 1 ? TallLambdas[0] : TallLambdas[e]);
        int width = Vector<float>.Count;
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var multiTask = new Vector<float>(chunk.TaskVector(0).Slice(j));
            for (int e = 1; e < experts; e++) multiTask += new Vector<float>(chunk.TaskVector(e).Slice(j));
            multiTask.CopyTo(shared.Slice(j));
            ((multiTask * lambda) + new Vector<float>(chunk.Base.Slice(j))).CopyTo(merged.Slice(j));
            for (int e = 0; e < experts; e++)
            {
                var tau = new Vector<float>(chunk.TaskVector(e).Slice(j));
                MaskBytes.Store(Vector.GreaterThanOrEqual(Vector.Abs(tau), Vector.Abs(multiTask - tau) * tall[e]), masks.Slice((e * n) + j));
            }
        }

        for (; j < n; j++)
        {
            float multiTask = chunk.TaskVector(0)[j];
            for (int e = 1; e < experts; e++) multiTask += chunk.TaskVector(e)[j];
            shared[j] = multiTask;
            merged[j] = (multiTask * lambda) + chunk.Base[j];
            for (int e = 0; e < experts; e++)
            {
                float tau = chunk.TaskVector(e)[j];
                masks[(e * n) + j] = Math.Abs(tau) >= Math.Abs(multiTask - tau) * tall[e] ? (byte)1 : (byte)0;
            }
        }
    }

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) =>
        throw new InvalidOperationException("TALL masks have no statistics pass.");

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator) =>
        throw new InvalidOperationException("TALL masks have no statistics pass.");
}
