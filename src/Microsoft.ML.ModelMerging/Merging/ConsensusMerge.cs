using System.Numerics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Consensus merging (Wang et al. 2024, with TALL masks): keep only the weights that the TALL masks of at least
/// k tasks select, dropping "selfish" (one task) and "catastrophic" (no task) weights:
/// θ = θ0 + λ·(1[Σ_t m_t ≥ k] ⊙ τ_MTL), τ_MTL = Σ_i τ_i, m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|.
/// </summary>
/// <remarks>k = 0 is task arithmetic; k greater than the number of tasks is refused (it would silently return θ0).</remarks>
public sealed class ConsensusMerge : MergeMethodBase, IElementwiseMergeMethod
{
    /// <summary>Default λ scaling the kept multi-task vector, 0.3.</summary>
    public const double DefaultLambda = 0.3;
    /// <summary>Default k, 2: a weight is kept when the masks of at least two tasks select it.</summary>
    public const int DefaultMinTasks = 2;

    /// <summary>Creates the method with its settings.</summary>
    /// <param name="lambda">λ scaling the kept multi-task vector; finite.</param>
    /// <param name="tallLambdas">λ_t of the TALL masks: one value for every task or one per task (default 0.4); each finite and ≥ 0.</param>
    /// <param name="minTasks">k, at least 0; at most the number of experts (checked by <see cref="MergeMethodBase.Begin"/>).</param>
    public ConsensusMerge(double lambda = DefaultLambda, IReadOnlyList<double>? tallLambdas = null, int minTasks = DefaultMinTasks)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(minTasks);
        Lambda = lambda;
        TallLambdas = TallMasksMerge.ValidateTallLambdas(tallLambdas);
        MinTasks = minTasks;
    }

    /// <summary>The registry entry: name <c>consensus</c>, parameters <c>lambda</c>, <c>tall-lambda</c> and <c>min-tasks</c>.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "consensus",
        "Consensus merging: task arithmetic restricted to the weights that the TALL masks of at least k tasks keep.",
        [
            MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the kept multi-task vector"),
            TallMasksMerge.TallLambdaParameter,
            MergeParameterSpec.Integer("min-tasks", DefaultMinTasks, "k: a weight is kept when at least k task masks select it", 0),
        ],
        parameters => new ConsensusMerge(
            parameters.GetNumber("lambda"),
            parameters.GetNumberPerExpert("tall-lambda"),
            (int)Math.Min(parameters.GetInteger("min-tasks"), int.MaxValue)));

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <summary>λ scaling the kept multi-task vector.</summary>
    public double Lambda { get; }

    /// <summary>λ_t of the TALL masks: one value for every task or one per task.</summary>
    public IReadOnlyList<double> TallLambdas { get; }

    /// <summary>k.</summary>
    public int MinTasks { get; }

    /// <inheritdoc/>
    protected override void OnBegin(int expertCount)
    {
        TallMasksMerge.EnsureTallLambdaCount(Name, TallLambdas, expertCount);
        if (MinTasks > expertCount)
            throw new ArgumentException(
                $"consensus: min-tasks {MinTasks} is more than the {expertCount} expert(s): no weight could be kept and the output would be the base model.");
    }

    bool IElementwiseMergeMethod.IsElementwise => true;

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input) => new(ElementwiseTensors.Merge(this, input));

    /// <summary>
    /// Per entry: τ_MTL = Σ τ_t (expert order), votes = #{t : |τ_t| ≥ λ_t·|τ_MTL − τ_t|} (float32, as the TALL masks),
    /// θ = θ0 + λ·τ_MTL where votes ≥ k, else θ0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged)
    {
        int n = chunk.Length, experts = chunk.ExpertCount;
        float lambda = (float)Lambda;
        Span<float> tall = stackalloc float[experts];
        for (int e = 0; e < experts; e++) tall[e] = (float)(TallLambdas.Count == 1 ? TallLambdas[0] : TallLambdas[e]);
        int width = Vector<float>.Count;
        var minTasks = new Vector<int>(MinTasks);
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var multiTask = new Vector<float>(chunk.TaskVector(0).Slice(j));
            for (int e = 1; e < experts; e++) multiTask += new Vector<float>(chunk.TaskVector(e).Slice(j));
            var votes = Vector<int>.Zero;
            for (int e = 0; e < experts; e++)
            {
                var tau = new Vector<float>(chunk.TaskVector(e).Slice(j));
                votes -= Vector.GreaterThanOrEqual(Vector.Abs(tau), Vector.Abs(multiTask - tau) * tall[e]); // true is −1
            }

            var kept = Vector.ConditionalSelect(Vector.AsVectorSingle(Vector.GreaterThanOrEqual(votes, minTasks)), multiTask, Vector<float>.Zero);
            (kept * lambda + new Vector<float>(chunk.Base.Slice(j))).CopyTo(merged.Slice(j));
        }

        for (; j < n; j++)
        {
            float multiTask = chunk.TaskVector(0)[j];
            for (int e = 1; e < experts; e++) multiTask += chunk.TaskVector(e)[j];
            int votes = 0;
            for (int e = 0; e < experts; e++)
            {
                float tau = chunk.TaskVector(e)[j];
                if (Math.Abs(tau) >= Math.Abs(multiTask - tau) * tall[e]) votes++;
            }

            merged[j] = ((votes >= MinTasks ? multiTask : 0f) * lambda) + chunk.Base[j];
        }
    }

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) =>
        throw new InvalidOperationException("Consensus merging has no statistics pass.");

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator) =>
        throw new InvalidOperationException("Consensus merging has no statistics pass.");
}
