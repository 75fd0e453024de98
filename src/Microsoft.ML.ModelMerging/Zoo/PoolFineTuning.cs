using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>What <see cref="PoolFineTuning.AddTask"/> does: which task, and the recipe (the zoo's by default).</summary>
public sealed record PoolFineTuningOptions
{
    /// <summary>An image folder (one sub-folder per class) or a built-in benchmark task name.</summary>
    public required string Task { get; init; }

    /// <summary>The task's name in the pool; default: the folder's name (or the benchmark task's).</summary>
    public string? Name { get; init; }

    /// <summary>The pre-trained checkpoint; required when the pool does not exist yet, else it must be the pool's base.</summary>
    public string? Base { get; init; }

    /// <summary>Seed of the split and of training.</summary>
    public int Seed { get; init; }

    /// <summary>Images per class the linear probe is fitted on; 0 (default) = the whole training split, the best head a user can get.</summary>
    public int ProbeShots { get; init; }

    /// <summary>The linear probe's training; default: the zoo recipe's.</summary>
    public TrainingOptions LinearProbe { get; init; } = new ZooRecipe().LinearProbe;

    /// <summary>Fine-tuning of the backbone with the head frozen; default: the default zoo recipe's local fine-tuning (10 epochs, lr 5e-5, AdamW, cosine); --epochs raises it for a task far from the base's corpus.</summary>
    public TrainingOptions FineTuning { get; init; } = new ZooRecipe().FineTuning;

    /// <summary>Image folders: fraction of each class held out for validation [0.15].</summary>
    public double ValidationFraction { get; init; } = ImageFolderTask.ValidationFraction;

    /// <summary>Image folders: fraction of each class held out for test [0.15].</summary>
    public double TestFraction { get; init; } = ImageFolderTask.TestFraction;

    /// <summary>Replace a task of the same name already in the pool (its expert, head and entry); otherwise that is refused.</summary>
    public bool Replace { get; init; }

    /// <summary>
    /// <c>full</c> (every backbone weight), <c>lora</c> or <c>l-lora</c> (an adapter only, stored as a PEFT folder
    /// <c>experts/&lt;task&gt;/</c>); see <see cref="FineTuningModes"/>.
    /// </summary>
    public string Mode { get; init; } = FineTuningModes.Full;

    /// <summary>The adapter's rank, alpha, targets and seed (modes <c>lora</c>, <c>l-lora</c>; <see cref="LoraOptions.Linearized"/> follows the mode).</summary>
    public LoraOptions Lora { get; init; } = new();

    /// <summary>
    /// An existing head checkpoint for the task, used frozen instead of fitting a linear probe (e.g. the head the pool's full
    /// experts were trained behind); the pool refers to it (relative path) rather than copying it.
    /// </summary>
    public string? Head { get; init; }
}

/// <summary>What <see cref="PoolFineTuning.AddTask"/> measured and wrote.</summary>
public sealed record PoolFineTuningResult(PoolTask Task, bool CreatedPool, double Seconds, string ReportPath);

/// <summary>
/// <c>mlmerge finetune --add-to</c>: fine-tunes an expert for a user's task and registers the task in a pool (created from
/// the base when missing), so every pool verb (<c>eval</c>, <c>adapt</c>, <c>compare</c>, <c>MergeExperts</c>) treats it
/// like a built-in task. The manifest is written last, atomically: an interrupted run leaves the pool as it was.
/// </summary>
public static class PoolFineTuning
{
    internal static readonly Regex TaskName = new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", RegexOptions.CultureInvariant);

    /// <summary>Fine-tunes an expert for the task <paramref name="options"/> names and adds (or, when asked, replaces) it in the pool.</summary>
    /// <param name="poolDirectory">The pool; created from the options' base when it does not exist.</param>
    /// <param name="options">The task, base, mode and training settings.</param>
    /// <param name="phases">Told when each phase starts; optional.</param>
    /// <param name="progress">Receives a report per training step; optional.</param>
    /// <param name="cancellation">Stops the run; the pool is left as it was.</param>
    /// <param name="sources">Where benchmark tasks' package data is; the default locations when null.</param>
    /// <returns>The task as registered, whether the pool was created, the time taken and the path of the expert's report.</returns>
    public static PoolFineTuningResult AddTask(string poolDirectory, PoolFineTuningOptions options, IProgress<string>? phases = null,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default, BenchmarkSources? sources = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(poolDirectory);
        ArgumentNullException.ThrowIfNull(options);
        var clock = Stopwatch.StartNew();
        bool isFolder = Directory.Exists(options.Task);
        string name = options.Name ?? (isFolder ? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.Task))) : options.Task);
        if (!TaskName.IsMatch(name))
        {
            throw new ArgumentException($"Task name '{name}' is not usable: use letters, digits, '.', '_' or '-' (at most 64), or give one with --name.");
        }

        // Nothing is written before training succeeds: a new pool appears, or an existing one changes, only at the end.
        bool created = !PoolManifest.Exists(poolDirectory);
        PoolManifest? existing = created ? null : PoolManifest.Read(poolDirectory);
        // Task names become file names: names that differ only by case would share files on Windows and macOS.
        if (existing?.Tasks.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase)) is { } clash
            && !(options.Replace && clash.Name == name))
        {
            throw new ArgumentException(clash.Name == name
                ? $"The pool at {poolDirectory} already has a task '{name}': choose another --name, or --replace it."
                : $"The pool at {poolDirectory} has a task '{clash.Name}', which differs from '{name}' only by case: choose another --name.");
        }

        // L-LoRA's task vectors add up only in one tangent space: every linearised task of a pool starts from the same φ0.
        if (FineTuningModes.Parse(options.Mode) == FineTuningModes.LinearizedLora && options.Lora is { } mine
            && existing?.Tasks.FirstOrDefault(t => t.Name != name && t.Training is { Mode: FineTuningModes.LinearizedLora } other
                && (other.LoraSeed != mine.Seed || other.Rank != mine.Rank || other.Alpha != mine.Alpha
                    || !(other.Targets ?? []).ToHashSet(StringComparer.Ordinal).SetEquals(mine.Targets))) is { } differing)
        {
            var theirs = differing.Training!;
            throw new ArgumentException($"The pool's L-LoRA task '{differing.Name}' starts from lora seed {theirs.LoraSeed}, rank {theirs.Rank}, alpha {theirs.Alpha}, targets {string.Join(",", theirs.Targets ?? [])}; " +
                $"this one from lora seed {mine.Seed}, rank {mine.Rank}, alpha {mine.Alpha}, targets {string.Join(",", mine.Targets)}: linearised adapters merge only around one shared initialisation, so use the pool's.");
        }

        string basePath = existing is null
            ? options.Base ?? throw new ArgumentException($"{poolDirectory} is not a pool yet: give --base <pre-trained checkpoint> to create it.")
            : BasePath(poolDirectory, existing, options);
        using var backbone = ModelCheckpoints.LoadBackbone(basePath);
        var config = backbone.Config;
        // A new pool around a Hugging Face base reads image folders as its preprocessor does, as `pool create` records.
        var manifest = existing ?? new PoolManifest
        {
            Model = JsonDocument.Parse(config.ToJson()).RootElement.Clone(),
            Pretrained = PoolManifest.PretrainedFileName,
            Preprocessing = PoolImport.PreprocessingOf(basePath, config),
            Tasks = [],
        };

        phases?.Report("loading the images");
        var data = isFolder
            ? new TaskDataSource
            {
                Kind = TaskDataSource.ImageFolderKind,
                Path = StoredFolderPath(poolDirectory, options.Task),
                Seed = options.Seed,
                ValidationFraction = options.ValidationFraction,
                TestFraction = options.TestFraction,
            }
            : new TaskDataSource { Kind = TaskDataSource.BenchmarkKind, Name = BenchmarkTasks.Get(options.Task).Name, Seed = options.Seed };
        // A pool made by `pool create` on a Hugging Face base reads folders as its preprocessor does, as ExpertPool.LoadData will.
        var splits = !isFolder ? BenchmarkTasks.Get(options.Task).Load(sources, options.Seed)
            : manifest.Preprocessing is { } preprocessing
                ? ImageFolderTask.Load(options.Task, preprocessing, options.Seed, options.ValidationFraction, options.TestFraction, name)
                : ImageFolderTask.Load(options.Task, config.ImageSize, config.Channels, options.Seed, options.ValidationFraction, options.TestFraction, name);
        if (isFolder)
            foreach (string note in ImageFolderTask.Notes(options.Task)) phases?.Report("note: " + note);

        if (splits.ClassNames.Count < 2)
            throw new ArgumentException($"{options.Task}: {splits.ClassNames.Count} class(es) ({string.Join(", ", splits.ClassNames)}); a classification task needs at least two.");
        string mode = FineTuningModes.Parse(options.Mode);
        var lora = mode == FineTuningModes.Full ? null : options.Lora with { Linearized = mode == FineTuningModes.LinearizedLora };
        lora?.Validate();
        using var result = options.Head is { } headPath
            ? FineTuneBehind(config, backbone.Weights, splits, ModelCheckpoints.LoadHead(headPath, name, splits.ClassNames), options, lora, progress, cancellation, phases)
            : ExpertTrainer.Train(config, backbone.Weights, splits, options.ProbeShots, options.LinearProbe, options.FineTuning, options.Seed,
                progress, cancellation, phases, lora);
        cancellation.ThrowIfCancellationRequested();

        Directory.CreateDirectory(Path.Combine(poolDirectory, "experts"));
        if (options.Head is null) Directory.CreateDirectory(Path.Combine(poolDirectory, "heads"));
        if (created)
        {
            // The pool keeps its own copy of the base, in the project's layout with the config in the metadata.
            ModelCheckpoints.SaveBackbone(Path.Combine(poolDirectory, PoolManifest.PretrainedFileName), config, backbone.Weights);
        }
        // An adapter is a PEFT folder experts/<task>/; a fully fine-tuned expert one checkpoint.
        string expert = lora is null ? $"experts/{name}.safetensors" : $"experts/{name}";
        string head = options.Head is { } given ? StoredFolderPath(poolDirectory, given) : $"heads/{name}.safetensors";
        // Written under other names first and moved in together right before the manifest, so a replaced task's old
        // expert and head stay a pair until the new ones are complete.
        using var staging = new PoolStaging(poolDirectory);
        if (result.Adapter is { } adapter)
        {
            PeftAdapterFolder.Save(adapter, staging.PathFor(expert),
                baseModel: StoredFolderPath(Path.Combine(poolDirectory, expert), Path.Combine(poolDirectory, manifest.Pretrained ?? PoolManifest.PretrainedFileName)));
        }
        else
        {
            ModelCheckpoints.SaveBackbone(staging.PathFor(expert), config, result.Backbone);
        }
        if (options.Head is null) ModelCheckpoints.SaveHead(staging.PathFor(head), result.Head, task: name);
        var task = PoolTask.FromSplits(name, isFolder ? $"image folder {Path.GetFullPath(options.Task)}" : $"benchmark task {data.Name}", data, splits,
            expert, head, result.LinearProbe, result.Expert) with
        {
            Training = new ExpertRecipe
            {
                Mode = mode, Seed = options.Seed, ProbeShots = options.Head is null ? options.ProbeShots : 0, LinearProbe = options.Head is null ? options.LinearProbe : null,
                FineTuning = options.FineTuning, Head = options.Head is null ? null : head,
                Rank = lora?.Rank, Alpha = lora?.Alpha, Targets = lora?.Targets, LoraSeed = lora?.Seed,
            },
        };

        // What was measured, with the time it took, beside the expert (the manifest stays free of timings).
        string report = Path.Combine(poolDirectory, "experts", name + ".json");
        File.WriteAllText(report + ".partial", JsonSerializer.Serialize(new
        {
            task = name,
            images = new { train = task.Train, validation = task.Validation, test = task.Test },
            classes = task.ClassNames,
            linear_probe_on_pretrained = new { validation = result.LinearProbe.Validation, test = result.LinearProbe.Test },
            expert = new { validation = result.Expert.Validation, test = result.Expert.Test },
            mode,
            trainable_parameters = result.TrainableParameters,
            fine_tuning_seconds = Math.Round(result.FineTuningSeconds, 1),
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 1),
            recipe = task.Training,
        }, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.Move(report + ".partial", report, overwrite: true);

        staging.Commit();
        manifest.WithTask(task).Write(poolDirectory);
        return new PoolFineTuningResult(task, created, clock.Elapsed.TotalSeconds, report);
    }

    private static ExpertTrainingResult FineTuneBehind(VisionTransformerConfig config, IReadOnlyDictionary<string, TorchSharp.torch.Tensor> pretrained,
        TaskSplits splits, ClassificationHead head, PoolFineTuningOptions options, LoraOptions? lora,
        IProgress<TrainingProgress>? progress, CancellationToken cancellation, IProgress<string>? phases)
    {
        SplitAccuracy probe;
        try
        {
            phases?.Report(ExpertTrainer.EvaluationPhase);
            probe = ExpertTrainer.Evaluate(config, pretrained, head, splits);
        }
        catch
        {
            head.Dispose();
            throw;
        }
        return ExpertTrainer.FineTune(config, pretrained, splits, head, probe, options.FineTuning, options.Seed, lora, progress, cancellation, phases);
    }

    private static string BasePath(string poolDirectory, PoolManifest manifest, PoolFineTuningOptions options)
    {
        string poolBase = Path.Combine(poolDirectory, manifest.Pretrained
            ?? throw new InvalidOperationException($"The pool at {poolDirectory} has no pre-trained base to fine-tune from."));
        if (options.Base is { } given && !SameWeights(given, poolBase))
        {
            throw new ArgumentException($"--base {given} is not the base of the pool at {poolDirectory} ({poolBase}); experts of one pool share their base.");
        }

        return poolBase;
    }

    private static bool SameWeights(string a, string b)
    {
        using var left = ModelCheckpoints.LoadBackbone(a);
        using var right = ModelCheckpoints.LoadBackbone(b);
        return left.Weights.Count == right.Weights.Count && left.Weights.All(kv =>
            right.Weights.TryGetValue(kv.Key, out var other) && kv.Value.shape.SequenceEqual(other.shape) && kv.Value.eq(other).all().item<bool>());
    }

    // Relative to the pool when the folder sits inside it or next to it, so pool and data can move together.
    internal static string StoredFolderPath(string poolDirectory, string folder)
    {
        string full = Path.GetFullPath(folder);
        string relative = Path.GetRelativePath(Path.GetFullPath(poolDirectory), full);
        return Path.IsPathRooted(relative) ? full : relative.Replace('\\', '/');
    }

}
