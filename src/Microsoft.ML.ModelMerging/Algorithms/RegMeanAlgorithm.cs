using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>RegMean: each linear layer solved in closed form from the experts' input Gram matrices (off-diagonals scaled by α).</summary>
internal sealed class RegMeanAlgorithm : LabeledDataAlgorithm
{
    private RegMeanAlgorithm()
        : base("regmean", "RegMean: every linear layer solved in closed form from the experts' input Gram matrices on training examples; other tensors averaged.",
            RegMeanMergeOptions.DefaultExamplesPerTask,
            MergeParameterSpec.Number("alpha", RegMeanMergeOptions.DefaultAlpha, "scale of the Gram matrices' off-diagonal entries", 0, 1),
            "Gram matrices of")
    {
    }

    public static RegMeanAlgorithm Instance { get; } = new();

    protected override Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<ExpertExamples> examples,
        ResolvedMergeParameters parameters, IProgress<DataMergeProgress> progress, CancellationToken cancellation) =>
        RegMeanMerge.Merge(config, examples, new RegMeanMergeOptions { Alpha = parameters.GetNumber("alpha") }, progress, cancellation);
}
