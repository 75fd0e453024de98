using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// What the data-based algorithms share (Fisher, RegMean): labeled training examples sampled per task from the pool
/// (<c>examples</c>, <c>seed</c>), one merged backbone serving every head. A subclass declares its own parameters and merges.
/// </summary>
internal abstract class LabeledDataAlgorithm : IMergeAlgorithm
{
    protected LabeledDataAlgorithm(string name, string summary, int defaultExamples, MergeParameterSpec own, string progressVerb)
    {
        Name = name;
        Summary = summary;
        ProgressVerb = progressVerb;
        Parameters =
        [
            MergeParameterSpec.Integer("examples", defaultExamples, "labeled training examples per task", 1, int.MaxValue),
            own,
            MergeParameterSpec.Integer("seed", 0, "seed of the choice of examples", 0, int.MaxValue),
        ];
    }

    public string Name { get; }

    public string Summary { get; }

    /// <summary>No base: these methods combine the experts' own weights.</summary>
    public AlgorithmNeeds Needs => AlgorithmNeeds.LabeledData;

    public IReadOnlyList<MergeParameterSpec> Parameters { get; }

    public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; } = new Dictionary<string, IReadOnlyList<string>>();

    /// <summary>How progress names the per-task work, e.g. <c>Fisher of</c>.</summary>
    private string ProgressVerb { get; }

    public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(context);
        var resolved = parameters.Resolve(Name, Parameters);
        var examples = PoolData.LabeledExamples(pool, (int)resolved.GetInteger("examples"), (int)resolved.GetInteger("seed"), context);
        try
        {
            var progress = new SynchronousProgress<DataMergeProgress>(p =>
                context.Progress?.Report(new AlgorithmProgress($"{ProgressVerb} {p.Task} ({p.TaskIndex + 1}/{p.TaskCount})", p.Done, p.Total)));
            // Heads first: a missing or mismatched head fails before the merge makes tensors to release.
            OnnxTaskHead[] heads = [.. (context.Tasks ?? pool.TaskNames).Select(t => new OnnxTaskHead(t, pool.Head(t)))];
            var merged = Merge(pool.Config, examples, resolved, progress, context.Cancellation);
            return MultiTaskModel.Dense(pool.Config, merged, heads, context.ExportOptions);
        }
        finally
        {
            PoolData.Dispose(examples);
        }
    }

    /// <summary>The merged backbone (owned by the caller) from the examples of every task.</summary>
    protected abstract Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<ExpertExamples> examples,
        ResolvedMergeParameters parameters, IProgress<DataMergeProgress> progress, CancellationToken cancellation);
}
