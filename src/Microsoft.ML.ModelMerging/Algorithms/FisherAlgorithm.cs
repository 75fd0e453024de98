using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>Fisher merging: each weight averaged across experts in proportion to its diagonal Fisher information on labeled examples.</summary>
public sealed class FisherAlgorithm : IMergeAlgorithm
{
    private FisherAlgorithm() { }

    public static FisherAlgorithm Instance { get; } = new();

    public string Name => "fisher";

    public string Summary => "Fisher merging: every weight averaged across experts in proportion to its diagonal Fisher information on labeled training examples.";

    // No base: the average is over the experts' own weights.
    public AlgorithmNeeds Needs => AlgorithmNeeds.LabeledData;

    public IReadOnlyList<MergeParameterSpec> Parameters { get; } =
    [
        MergeParameterSpec.Integer("examples", FisherMergeOptions.DefaultExamplesPerTask, "labeled training examples per task", 1, int.MaxValue),
        MergeParameterSpec.Number("epsilon", FisherMergeOptions.DefaultEpsilon, "added to every Fisher weight", 0, double.PositiveInfinity, minimumInclusive: false),
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
            var merged = FisherMerge.Merge(pool.Config, examples, new FisherMergeOptions { Epsilon = resolved.GetNumber("epsilon") },
                DataProgress(context, "Fisher of"), context.Cancellation);
            return MultiTaskModel.Dense(pool.Config, merged, Heads(pool, context), context.ExportOptions);
        }
        finally
        {
            PoolData.Dispose(examples);
        }
    }

    internal static OnnxTaskHead[] Heads(ExpertPool pool, AlgorithmContext context) =>
        [.. (context.Tasks ?? pool.TaskNames).Select(t => new OnnxTaskHead(t, pool.Head(t)))];

    internal static IProgress<DataMergeProgress> DataProgress(AlgorithmContext context, string verb) =>
        new SynchronousProgress<DataMergeProgress>(p =>
            context.Progress?.Report(new AlgorithmProgress($"{verb} {p.Task} ({p.TaskIndex + 1}/{p.TaskCount})", p.Done, p.Total)));
}
