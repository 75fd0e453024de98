using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Consensus merging (Wang et al. 2024, with TALL masks): keep only the weights that the TALL masks of at least
/// k tasks select, dropping "selfish" (one task) and "catastrophic" (no task) weights:
/// θ = θ0 + λ·(1[Σ_t m_t ≥ k] ⊙ τ_MTL), τ_MTL = Σ_i τ_i, m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|.
/// </summary>
/// <remarks>k = 0 is task arithmetic; k greater than the number of tasks gives θ0.</remarks>
public sealed class ConsensusMerge : MergeMethodBase
{
    public const double DefaultLambda = 0.3;
    public const int DefaultMinTasks = 2;

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

    public override string Name => Descriptor.Name;

    public double Lambda { get; }

    public IReadOnlyList<double> TallLambdas { get; }

    /// <summary>k.</summary>
    public int MinTasks { get; }

    protected override void OnBegin(int expertCount) => TallMasksMerge.EnsureTallLambdaCount(Name, TallLambdas, expertCount);

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var scope = NewDisposeScope();
        var stacked = input.StackTaskVectors();
        var multiTask = stacked.sum(dim: 0);
        var votes = TallMasksMerge.TaskMasks(input, stacked, multiTask, TallLambdas).sum(dim: 0);
        var consensus = multiTask.mul(OwnedScalar.With(MinTasks, votes.ge));
        return new MergedTensor(input.Base.add(OwnedScalar.With(Lambda, consensus.mul)).MoveToOuterDisposeScope());
    }
}
