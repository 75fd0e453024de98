using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// How <see cref="MergeExpertsEstimator"/> turns an expert set into one exportable model: FusionBench's <c>method.Run(pool)</c>.
/// Weight-only methods (<see cref="WeightMergeStrategy"/>) look only at the weights; strategies that adapt at test time
/// (AdaMerging, WEMoE) set <see cref="RequiresUnlabeledImages"/> and receive the images of the data <c>Fit</c> is given.
/// </summary>
public interface IMergeStrategy
{
    /// <summary>A short name for messages and for the model's metadata (e.g. <c>task-arithmetic</c>).</summary>
    string Name { get; }

    /// <summary>The strategy's settings, recorded in the ONNX model's metadata.</summary>
    IReadOnlyDictionary<string, string> Settings { get; }

    /// <summary>Whether <see cref="Merge"/> needs <see cref="MergeStrategyContext.Images"/> (unlabeled images of the tasks).</summary>
    bool RequiresUnlabeledImages { get; }

    /// <summary>
    /// Merges and returns exporters covering every task of <see cref="MergeStrategyContext.Tasks"/> exactly once. The caller
    /// exports them and then disposes the result.
    /// </summary>
    MergedModel Merge(MergeStrategyContext context);
}

/// <summary>What a strategy is given.</summary>
public sealed class MergeStrategyContext
{
    public MergeStrategyContext(ExpertPool experts, IReadOnlyList<string> tasks, VitOnnxExportOptions exportOptions,
        UnlabeledImages? images = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(exportOptions);
        if (tasks.Count == 0)
        {
            throw new ArgumentException("At least one task is needed.", nameof(tasks));
        }

        foreach (string task in tasks)
        {
            if (!experts.TaskNames.Contains(task, StringComparer.Ordinal))
            {
                throw new ArgumentException($"Task '{task}' is not in the expert set ({string.Join(", ", experts.TaskNames)}).", nameof(tasks));
            }
        }

        Experts = experts;
        Tasks = tasks;
        ExportOptions = exportOptions;
        Images = images;
        Cancellation = cancellation;
    }

    /// <summary>The pre-trained model, every expert and every head. Merging uses all its experts.</summary>
    public ExpertPool Experts { get; }

    /// <summary>The tasks whose heads the exported model must have (all of the set's, or the one asked for).</summary>
    public IReadOnlyList<string> Tasks { get; }

    /// <summary>Options to create the exporters with (precision, score kind, metadata).</summary>
    public VitOnnxExportOptions ExportOptions { get; }

    /// <summary>Unlabeled images from the data given to <c>Fit</c>; null unless the strategy requires them.</summary>
    public UnlabeledImages? Images { get; }

    public CancellationToken Cancellation { get; }
}

/// <summary>
/// The exportable result of a merge: one or more exporters, each serving some tasks (one shared model for every task, or
/// one model per task for methods whose weights depend on the task), and the tensors they read, released on dispose.
/// </summary>
public sealed class MergedModel : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;
    private bool _disposed;

    /// <param name="parts">The exporters; a task may appear in one part only.</param>
    /// <param name="owned">What the exporters read (merged weights, ...), disposed with this object.</param>
    public MergedModel(IReadOnlyList<MergedModelPart> parts, IEnumerable<IDisposable>? owned = null)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0)
        {
            throw new ArgumentException("A merged model needs at least one part.", nameof(parts));
        }

        var duplicate = parts.SelectMany(p => p.Tasks).GroupBy(t => t, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Task '{duplicate.Key}' is served by {duplicate.Count()} parts; each task needs exactly one.", nameof(parts));
        }

        Parts = parts;
        _owned = owned?.ToArray() ?? [];
    }

    public IReadOnlyList<MergedModelPart> Parts { get; }

    /// <summary>Every task served, in part order.</summary>
    public IReadOnlyList<string> Tasks => Parts.SelectMany(p => p.Tasks).ToArray();

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (IDisposable owned in _owned)
        {
            owned.Dispose();
        }
    }
}

/// <summary>One exported model: an exporter (dense, or derived such as WEMoE's) whose heads are exactly <see cref="Tasks"/>.</summary>
public sealed record MergedModelPart
{
    public MergedModelPart(DenseVitOnnxExporter exporter)
    {
        ArgumentNullException.ThrowIfNull(exporter);
        Exporter = exporter;
        Tasks = exporter.Heads.Select(h => h.Task).ToArray();
    }

    public DenseVitOnnxExporter Exporter { get; }

    public IReadOnlyList<string> Tasks { get; }
}
