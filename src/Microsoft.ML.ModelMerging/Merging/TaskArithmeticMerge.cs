using System.Runtime.CompilerServices;
using System.Numerics;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Task arithmetic (Ilharco et al. 2023): θ = θ0 + λ Σ_i τ_i.</summary>
public sealed class TaskArithmeticMerge : MergeMethodBase, IElementwiseMergeMethod
{
    /// <summary>Default λ, 0.3.</summary>
    public const double DefaultLambda = 0.3;

    /// <summary>Creates task arithmetic with scaling <paramref name="lambda"/>.</summary>
    /// <param name="lambda">λ scaling the summed task vectors; finite.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="lambda"/> is NaN or infinite.</exception>
    public TaskArithmeticMerge(double lambda = DefaultLambda)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        Lambda = lambda;
    }

    /// <summary>The registry entry: name <c>task-arithmetic</c>, parameter <c>lambda</c>.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "task-arithmetic",
        "θ = θ0 + λ·Σ τ_i.",
        [MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the summed task vectors")],
        parameters => new TaskArithmeticMerge(parameters.GetNumber("lambda")));

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    /// <summary>λ scaling the summed task vectors.</summary>
    public double Lambda { get; }

    bool IElementwiseMergeMethod.IsElementwise => true;

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input) => new(ElementwiseTensors.Merge(this, input));

    /// <summary>θ0 + λ·Σ τ_i per entry: τ summed in expert order, then scaled, then added (no fused multiply-add).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged)
    {
        int n = chunk.Length;
        float lambda = (float)Lambda;
        int width = Vector<float>.Count;
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var sum = new Vector<float>(chunk.TaskVector(0).Slice(j));
            for (int e = 1; e < chunk.ExpertCount; e++) sum += new Vector<float>(chunk.TaskVector(e).Slice(j));
            (sum * lambda + new Vector<float>(chunk.Base.Slice(j))).CopyTo(merged.Slice(j));
        }

        for (; j < n; j++)
        {
            float sum = chunk.TaskVector(0)[j];
            for (int e = 1; e < chunk.ExpertCount; e++) sum += chunk.TaskVector(e)[j];
            merged[j] = (sum * lambda) + chunk.Base[j];
        }
    }

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) =>
        throw new InvalidOperationException("Task arithmetic has no statistics pass.");

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator) =>
        throw new InvalidOperationException("Task arithmetic has no statistics pass.");
}
