using System.Numerics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Simple average: θ = mean_i θ_i, computed as θ0 + mean_i τ_i (so per-expert weights scale each τ_i).</summary>
public sealed class SimpleAverageMerge : MergeMethodBase, IElementwiseMergeMethod
{
    /// <summary>The registry entry: name <c>simple-average</c>, no parameters; it does not need a pre-trained base.</summary>
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "simple-average",
        "θ = mean of the experts' weights.",
        [],
        _ => new SimpleAverageMerge(),
        usesBase: false);

    /// <inheritdoc/>
    public override string Name => Descriptor.Name;

    bool IElementwiseMergeMethod.IsElementwise => true;

    /// <inheritdoc/>
    protected override MergedTensor Merge(MergeTensorInput input) => new(ElementwiseTensors.Merge(this, input));

    /// <summary>θ0 + (Σ τ_i)/n per entry: τ summed in expert order, divided by the expert count, then added.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void IElementwiseMergeMethod.MergeChunk(in ElementwiseChunk chunk, Span<float> merged)
    {
        int n = chunk.Length;
        float count = chunk.ExpertCount;
        int width = Vector<float>.Count;
        int j = 0;
        for (; j + width <= n; j += width)
        {
            var sum = new Vector<float>(chunk.TaskVector(0).Slice(j));
            for (int e = 1; e < chunk.ExpertCount; e++) sum += new Vector<float>(chunk.TaskVector(e).Slice(j));
            (sum / count + new Vector<float>(chunk.Base.Slice(j))).CopyTo(merged.Slice(j));
        }

        for (; j < n; j++)
        {
            float sum = chunk.TaskVector(0)[j];
            for (int e = 1; e < chunk.ExpertCount; e++) sum += chunk.TaskVector(e)[j];
            merged[j] = (sum / count) + chunk.Base[j];
        }
    }

    IChunkAccumulator IElementwiseMergeMethod.CreateAccumulator(int pass) =>
        throw new InvalidOperationException("Simple average has no statistics pass.");

    void IElementwiseMergeMethod.AddAccumulated(int pass, IChunkAccumulator accumulator) =>
        throw new InvalidOperationException("Simple average has no statistics pass.");
}
