using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Simple average: θ = mean_i θ_i, computed as θ0 + mean_i τ_i (so per-expert weights scale each τ_i).</summary>
public sealed class SimpleAverageMerge : MergeMethodBase
{
    public static MergeMethodDescriptor Descriptor { get; } = new(
        "simple-average",
        "θ = mean of the experts' weights.",
        [],
        _ => new SimpleAverageMerge());

    public override string Name => Descriptor.Name;

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var stacked = input.StackTaskVectors();
        var merged = stacked.mean([0L]);
        merged.add_(input.Base); // mean + θ0 = θ0 + mean exactly; in place, so one tensor-sized allocation per tensor
        return new MergedTensor(merged);
    }
}
