using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// TACT (the non-local merging paper's task-specific activation correction) over any weight-only base merge: the base
/// method merges the experts, then each task gets its own <see cref="ActivationCorrection"/> fitted on unlabeled images of
/// that task, so the result has one model per task (the task must be known at inference). It repairs the variance
/// collapse of merges of experts far apart (different foundations, even after permutation alignment) and should leave a
/// local merge about where it was.
/// </summary>
internal sealed class TactAlgorithm : IMergeAlgorithm
{
    /// <summary>The weight-only methods a correction can follow.</summary>
    public static IReadOnlyList<string> BaseMethods { get; } = ["simple-average", "task-arithmetic", "ties", "tall-masks", "dare", "consensus", "emr"];

    private TactAlgorithm()
    {
    }

    public static TactAlgorithm Instance { get; } = new();

    public string Name => "tact";

    public string Summary =>
        "TACT: a base merge, then per task every site's channels rescaled and shifted to the expert's mean and variance on unlabeled images of the task.";

    /// <summary>Images of every task; a base only when the base method uses one (checked when run).</summary>
    public AlgorithmNeeds Needs => AlgorithmNeeds.UnlabeledImages | AlgorithmNeeds.TaskAtInference;

    public IReadOnlyList<MergeParameterSpec> Parameters { get; } =
    [
        MergeParameterSpec.Choice("base-method", "simple-average", "the weight-only merge that is corrected", [.. BaseMethods]),
        MergeParameterSpec.Integer("examples", 256, "unlabeled images per task the statistics are measured on", 2, int.MaxValue),
        MergeParameterSpec.Number("epsilon", ActivationCorrection.DefaultEpsilon, "ε added to the merged model's variance", 0, double.MaxValue),
        MergeParameterSpec.Choice("statistics", "channel", "per channel over all tokens (the paper's) or per channel and token position", "channel", "token"),
        MergeParameterSpec.Integer("seed", 0, "seed of the choice of images when a task has more than `examples`", 0, int.MaxValue),
        MergeParameterSpec.Number("lambda", TaskArithmeticMerge.DefaultLambda, "the base method's λ, when it has one"),
        MergeParameterSpec.Number("keep", TiesMerge.DefaultKeep, "the base method's kept fraction (TIES), when it has one", 0, 1, minimumInclusive: false),
    ];

    /// <summary>
    /// Both granularities, on the default base (it needs no pre-trained base, so the search runs on any pool): validation
    /// decides between the paper's per-channel maps and the per-token ones, which repair far more on ViTs.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; } =
        new Dictionary<string, IReadOnlyList<string>> { ["statistics"] = ["channel", "token"] };

    /// <summary>
    /// The parameters, and what the base method needs: a pre-trained base in the pool when it forms task vectors, and only
    /// the λ and kept fraction it declares.
    /// </summary>
    public void Check(ExpertPool pool, MergeParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        var resolved = parameters.Resolve(Name, Parameters);
        var baseAlgorithm = (WeightOnlyAlgorithm)MergeAlgorithmRegistry.Default.Get(resolved.GetChoice("base-method"));
        BaseParameters(baseAlgorithm, parameters, resolved);
        ((IMergeAlgorithm)baseAlgorithm).Check(pool, MergeParameters.Empty);
    }

    public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(context);
        Check(pool, parameters);
        var resolved = parameters.Resolve(Name, Parameters);
        var baseAlgorithm = (WeightOnlyAlgorithm)MergeAlgorithmRegistry.Default.Get(resolved.GetChoice("base-method"));
        var baseParameters = BaseParameters(baseAlgorithm, parameters, resolved);
        int examples = (int)resolved.GetInteger("examples");
        double epsilon = resolved.GetNumber("epsilon");
        var statistics = resolved.GetChoice("statistics") == "token" ? CorrectionStatistics.Token : CorrectionStatistics.Channel;
        var tasks = context.Tasks ?? pool.TaskNames;

        var (adaptationTasks, loaded) = PoolData.AdaptationTasks(pool, context, Name);
        using var _ = loaded;
        var imagesByTask = adaptationTasks.ToDictionary(t => t.Name, t => t.Images, StringComparer.Ordinal);
        var missing = tasks.Where(t => !imagesByTask.ContainsKey(t)).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidOperationException(
                $"TACT corrects each task with statistics of that task's images, and no images were given for {string.Join(", ", missing)} " +
                "(with MergeExperts: give Fit rows of every task, or set Task to one of the tasks the rows have).");
        }

        context.Progress?.Report(new AlgorithmProgress($"merging ({baseAlgorithm.Name})", 0, tasks.Count));
        using var result = baseAlgorithm.Merge(baseAlgorithm.Method.Create(baseParameters), pool);
        var owned = new List<IDisposable>();
        try
        {
            Dictionary<string, Tensor>? shared = null;
            if (!result.HasTaskSpecificWeights)
            {
                shared = result.Merged.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone(), StringComparer.Ordinal);
                owned.Add(new OwnedTensors(shared.Values));
            }

            var parts = new List<MultiTaskModelPart>();
            for (int i = 0; i < tasks.Count; i++)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                string task = tasks[i];
                // A task with fewer images than asked for is measured on all it has; the stage says how many.
                long available = imagesByTask[task].shape[0];
                string used = available < examples ? $", all {available} of its images (fewer than examples = {examples})" : "";
                context.Progress?.Report(new AlgorithmProgress($"correcting {task} ({i + 1}/{tasks.Count}){used}", i, tasks.Count));
                IReadOnlyDictionary<string, Tensor> weights;
                if (shared is not null)
                {
                    weights = shared;
                }
                else
                {
                    var own = result.MaterializeTask(pool.TaskNames.ToList().IndexOf(task));
                    owned.Add(new OwnedTensors(own.Values));
                    weights = own;
                }

                using var images = Choose(imagesByTask[task], examples, resolved.GetInteger("seed"));
                var correction = ActivationCorrection.Fit(pool.Config, pool.Expert(task), weights, images, epsilon, cancellation: context.Cancellation, statistics: statistics);
                owned.Add(correction);
                string backbone = shared is not null ? CorrectedVitOnnxExporter.SharedBackboneFileName : CorrectedVitOnnxExporter.TaskBackboneFileName(task);
                parts.Add(new MultiTaskModelPart(new CorrectedVitOnnxExporter(pool.Config, weights, new OnnxTaskHead(task, pool.Head(task)),
                    correction, backbone, context.ExportOptions)));
            }

            context.Progress?.Report(new AlgorithmProgress("correcting", tasks.Count, tasks.Count));
            return new MultiTaskModel(parts, owned);
        }
        catch
        {
            foreach (var disposable in owned) disposable.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The base method's parameters: λ and the kept fraction, for a base method that declares them. Given explicitly to a
    /// base method without them, they are refused rather than silently ignored.
    /// </summary>
    private static MergeParameters BaseParameters(WeightOnlyAlgorithm baseAlgorithm, MergeParameters given, ResolvedMergeParameters resolved)
    {
        var values = new List<KeyValuePair<string, string>>();
        foreach (string name in new[] { "lambda", "keep" })
        {
            bool declared = baseAlgorithm.Parameters.Any(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));
            if (declared)
            {
                values.Add(new(name, resolved.GetNumber(name).ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
            }
            else if (given.Values.ContainsKey(name))
            {
                throw new ArgumentException($"tact: '{name}' was given, but the base method {baseAlgorithm.Name} has no such parameter.");
            }
        }

        return new MergeParameters(values);
    }

    /// <summary>At most <paramref name="count"/> of the images, a seeded random choice when there are more (kept in row order).</summary>
    private static Tensor Choose(Tensor images, int count, long seed)
    {
        if (images.shape[0] <= count) return images.alias();
        using var generator = new TorchSharp.torch.Generator((ulong)seed);
        using var order = randperm(images.shape[0], generator: generator);
        using var chosen = order.narrow(0, 0, count).sort().Values;
        return images.index_select(0, chosen);
    }
}
