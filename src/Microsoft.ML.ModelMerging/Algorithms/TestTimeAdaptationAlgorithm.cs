using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// What the algorithms trained by test-time adaptation share: entropy minimisation with Adam on unlabeled images of every
/// task (DESIGN §3), their common parameters, resumable checkpoints, and progress per step. A subclass builds the
/// adaptable model and turns the adapted model into a <see cref="MultiTaskModel"/>.
/// </summary>
internal abstract class TestTimeAdaptationAlgorithm : IMergeAlgorithm
{
    protected TestTimeAdaptationAlgorithm(string name, string summary, double defaultLearningRate, IEnumerable<MergeParameterSpec> own)
    {
        Name = name;
        Summary = summary;
        Parameters =
        [
            MergeParameterSpec.Integer("steps", TestTimeAdaptationOptions.DefaultSteps, "adaptation steps", 1),
            MergeParameterSpec.Number("learning-rate", defaultLearningRate, "Adam's learning rate", 0, double.PositiveInfinity, minimumInclusive: false),
            MergeParameterSpec.Integer("batch", TestTimeAdaptationOptions.DefaultBatchSizePerTask, "unlabeled images per task per step", 1),
            .. own,
            MergeParameterSpec.Number("diversity", 0, "weight of a term rewarding answers spread over the classes within each task's batch (entropy of the mean prediction), against entropy minimisation's collapse to one confident answer; 0 = entropy alone, the paper's objective", 0, double.PositiveInfinity),
            MergeParameterSpec.Integer("seed", 0, "seed of the initialisation and of the batch order", 0, int.MaxValue),
        ];
    }

    public string Name { get; }

    public string Summary { get; }

    public AlgorithmNeeds Needs => AlgorithmNeeds.PretrainedBase | AlgorithmNeeds.UnlabeledImages;

    public IReadOnlyList<MergeParameterSpec> Parameters { get; }

    /// <summary>
    /// The settings <c>compare</c> tries besides the steps it sets, the best on validation representing the method: by
    /// default only the defaults, since adaptation is too costly to grid-search.
    /// </summary>
    public virtual IReadOnlyList<IReadOnlyDictionary<string, string>> ComparisonSettings { get; } = [new Dictionary<string, string>()];

    /// <summary>No grid: adaptation is too costly to grid-search (see <see cref="ComparisonSettings"/>); <c>compare</c> sets the steps.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; } = new Dictionary<string, IReadOnlyList<string>>();

    public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(context);
        var resolved = parameters.Resolve(Name, Parameters);
        var tta = AdaptationOptions(resolved, new TestTimeAdaptationOptions
        {
            Steps = (int)resolved.GetInteger("steps"),
            LearningRate = resolved.GetNumber("learning-rate"),
            BatchSizePerTask = (int)resolved.GetInteger("batch"),
            Seed = resolved.GetInteger("seed"),
            DiversityWeight = resolved.GetNumber("diversity"),
            CheckpointPath = context.Checkpointing?.Path,
            CheckpointEvery = context.Checkpointing?.Every ?? 0,
            CheckpointInterval = context.Checkpointing?.Interval,
            ResumeFrom = context.Checkpointing is { Resume: true } c && File.Exists(c.Path) ? c.Path : null,
        });
        var (tasks, loaded) = PoolData.AdaptationTasks(pool, context, Name);
        using var _ = loaded;
        var heads = (context.Tasks ?? pool.TaskNames).Select(t => new OnnxTaskHead(t, pool.Head(t))).ToArray();
        var metadata = new Dictionary<string, string>(context.ExportOptions.Metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (key, value) in WeightEnsemblingRouterFile.TaskMetadata(pool.TaskNames))
        {
            metadata[key] = value;
        }

        var exportOptions = context.ExportOptions with { Metadata = metadata };
        var progress = context.Progress is { } report
            ? new Runtime.SynchronousProgress<AdaptationProgress>(p => report.Report(new AlgorithmProgress("adapting", p.Step, p.TotalSteps, p)))
            : null;
        return Adapt(pool, resolved, tasks, heads, exportOptions, model => TestTimeAdaptation.Run(model, tasks, tta, progress, context.Cancellation));
    }

    /// <summary>The adaptation settings from the algorithm's own parameters, on top of the shared ones in <paramref name="shared"/>.</summary>
    protected virtual TestTimeAdaptationOptions AdaptationOptions(ResolvedMergeParameters parameters, TestTimeAdaptationOptions shared) => shared;

    /// <summary>Builds the adaptable model, calls <paramref name="adapt"/> on it, and returns the adapted result.</summary>
    protected abstract MultiTaskModel Adapt(ExpertPool pool, ResolvedMergeParameters parameters, IReadOnlyList<AdaptationTask> tasks,
        IReadOnlyList<OnnxTaskHead> heads, VitOnnxExportOptions exportOptions, Action<IAdaptableModel> adapt);
}
