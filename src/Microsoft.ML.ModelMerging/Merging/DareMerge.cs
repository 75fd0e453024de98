using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each task-vector entry with probability p and
/// rescale the survivors, τ̃_i = (m ⊙ τ_i)/(1 − p) with m ~ Bernoulli(1 − p), then merge τ̃ with task arithmetic or TIES.
/// </summary>
/// <remarks>
/// The mask of expert i on tensor n comes from a generator seeded with a stable hash of (seed, i, n): the same seed
/// gives the same model whatever order the tensors are processed in, and every statistics pass sees the same τ̃.
/// </remarks>
public sealed class DareMerge : MergeMethodBase
{
    public const double DefaultDropRate = 0.5;

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
    }

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

    public override string Name => Descriptor.Name;

    public override int StatisticsPassCount => Then.StatisticsPassCount;

    public override bool ProducesTaskSpecificWeights => Then.ProducesTaskSpecificWeights;

    /// <summary>p.</summary>
    public double DropRate { get; }

    public long Seed { get; }

    /// <summary>The merge applied to the dropped, rescaled task vectors.</summary>
    public IMergeMethod Then { get; }

    /// <summary>τ̃ = (m ⊙ τ)/(1 − p) for expert <paramref name="expertIndex"/>'s tensor <paramref name="tensorName"/>; the caller owns it.</summary>
    public Tensor DropAndRescale(Tensor taskVector, int expertIndex, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(taskVector);
        ArgumentNullException.ThrowIfNull(tensorName);
        using var scope = NewDisposeScope();
        using var generator = new Generator(StableSeed.Derive(Seed, expertIndex, tensorName), CPU);
        var uniform = rand(taskVector.shape, dtype: ScalarType.Float32, generator: generator).to(taskVector.device);
        var kept = uniform.ge(DropRate);
        return taskVector.mul(kept).div(1 - DropRate).MoveToOuterDisposeScope();
    }

    protected override void OnBegin(int expertCount) => Then.Begin(expertCount);

    protected override void Accumulate(int pass, MergeTensorInput input)
    {
        using var dropped = Drop(input);
        Then.AccumulateStatistics(pass, dropped);
    }

    protected override void CompletePass(int pass) => Then.FinishPass(pass);

    public override bool NeedsPass(int pass) => Then.NeedsPass(pass);

    protected override MergedTensor Merge(MergeTensorInput input)
    {
        using var dropped = Drop(input);
        return Then.MergeTensor(dropped);
    }

    private MergeTensorInput Drop(MergeTensorInput input) =>
        input.WithOwnedTaskVectors([.. input.TaskVectors.Select((taskVector, i) => DropAndRescale(taskVector, i, input.Name))]);
}
