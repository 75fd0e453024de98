using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>Fisher merging: each weight averaged across experts in proportion to its diagonal Fisher information on labeled examples.</summary>
internal sealed class FisherAlgorithm : LabeledDataAlgorithm
{
    private FisherAlgorithm()
        : base("fisher", "Fisher merging: every weight averaged across experts in proportion to its diagonal Fisher information on labeled training examples.",
            FisherMergeOptions.DefaultExamplesPerTask,
            MergeParameterSpec.Number("epsilon", FisherMergeOptions.DefaultEpsilon, "added to every Fisher weight", 0, double.PositiveInfinity, minimumInclusive: false),
            "Fisher of")
    {
    }

    public static FisherAlgorithm Instance { get; } = new();

    protected override Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<ExpertExamples> examples,
        ResolvedMergeParameters parameters, IProgress<DataMergeProgress> progress, CancellationToken cancellation) =>
        FisherMerge.Merge(config, examples, new FisherMergeOptions { Epsilon = parameters.GetNumber("epsilon") }, progress, cancellation);
}
