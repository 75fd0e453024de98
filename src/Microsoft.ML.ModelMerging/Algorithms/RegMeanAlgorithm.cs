using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>RegMean: each linear layer solved in closed form from the experts' input Gram matrices (off-diagonals scaled by α).</summary>
public sealed class RegMeanAlgorithm : IMergeAlgorithm
{
    private RegMeanAlgorithm() { }

    public static RegMeanAlgorithm Instance { get; } = new();

    public string Name => "regmean";

    public string Summary => "RegMean: every linear layer solved in closed form from the experts' input Gram matrices on training examples; other tensors averaged.";

    public AlgorithmNeeds Needs => AlgorithmNeeds.LabeledData;

    public IReadOnlyList<MergeParameterSpec> Parameters { get; } =
    [
        MergeParameterSpec.Integer("examples", RegMeanMergeOptions.DefaultExamplesPerTask, "training examples per task (labels unused)", 1, int.MaxValue),
        MergeParameterSpec.Number("alpha", RegMeanMergeOptions.DefaultAlpha, "scale of the Gram matrices' off-diagonal entries", 0, 1),
        MergeParameterSpec.Integer("seed", 0, "seed of the choice of examples", 0, int.MaxValue),
    ];

    public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; } = new Dictionary<string, IReadOnlyList<string>>();

    public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(context);
        var resolved = parameters.Resolve(Name, Parameters);
        var examples = PoolData.LabeledExamples(pool, (int)resolved.GetInteger("examples"), (int)resolved.GetInteger("seed"), context);
        try
        {
            var merged = RegMeanMerge.Merge(pool.Config, examples, new RegMeanMergeOptions { Alpha = resolved.GetNumber("alpha") },
                FisherAlgorithm.DataProgress(context, "Gram matrices of"), context.Cancellation);
            return MultiTaskModel.Dense(pool.Config, merged, FisherAlgorithm.Heads(pool, context), context.ExportOptions);
        }
        finally
        {
            PoolData.Dispose(examples);
        }
    }
}
