using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Task arithmetic (Ilharco et al. 2023): θ = θ0 + λ Σ_i τ_i.</summary>
public sealed class TaskArithmeticMerge : MergeMethodBase
{
    public const double DefaultLambda = 0.3;

    public TaskArithmeticMerge(double lambda = DefaultLambda)
    {
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite.");
        }

        Lambda = lambda;
    }

    public static MergeMethodDescriptor Descriptor { get; } = new(
        "task-arithmetic",
        "θ = θ0 + λ·Σ τ_i.",
        [MergeParameterSpec.Number("lambda", DefaultLambda, "scaling λ of the summed task vectors")],
        parameters => new TaskArithmeticMerge(parameters.GetNumber("lambda")));

    public override string Name => Descriptor.Name;

    public double Lambda { get; }

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        // θ0 + λ·Σ τ_i, computed in place in the sum (a + b = b + a exactly): one tensor-sized allocation per tensor.
        using var stacked = input.StackTaskVectors();
        var merged = stacked.sum(dim: 0);
        merged.mul_(Lambda);
        merged.add_(input.Base);
        return new MergedTensor(merged);
    }
}
