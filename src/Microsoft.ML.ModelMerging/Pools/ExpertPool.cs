using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>
/// An expert pool: a pre-trained model (optional), fine-tuned experts, their heads and each task's data, as a pool
/// directory holds them (<see cref="PoolManifest"/>): the input of every merge algorithm. The committed zoo is one pool, a
/// user's folder made by <c>mlmerge finetune --add-to</c> another; both behave the same. Tensors are loaded on demand and
/// owned by the pool.
/// </summary>
public sealed class ExpertPool : IDisposable
{
    private readonly Dictionary<string, LoadedBackbone> _experts = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ClassificationHead> _heads = new(StringComparer.Ordinal);
    private LoadedBackbone? _pretrained;

    private ExpertPool(string directory, PoolManifest manifest, IReadOnlyList<PoolTask> tasks)
    {
        Directory = directory;
        Manifest = manifest;
        Tasks = tasks;
    }

    /// <summary>The pool directory (where <c>pool.json</c> lives).</summary>
    public string Directory { get; }
    /// <summary>The pool's manifest, <c>pool.json</c>.</summary>
    public PoolManifest Manifest { get; }
    /// <summary>The tasks in this pool: all of the manifest's in its order, or the ones asked for in the order asked.</summary>
    public IReadOnlyList<PoolTask> Tasks { get; }
    /// <summary>The names of <see cref="Tasks"/>, in the same order.</summary>
    public IReadOnlyList<string> TaskNames => Tasks.Select(t => t.Name).ToList();
    /// <summary>The Vision Transformer configuration every checkpoint of the pool has.</summary>
    public VisionTransformerConfig Config => Manifest.ModelConfig;

    /// <summary>Opens a pool directory, optionally restricted to some tasks (in the order given).</summary>
    /// <exception cref="ArgumentException">A task is not in the pool, or the pool has no task.</exception>
    public static ExpertPool Load(string directory, IEnumerable<string>? tasks = null)
    {
        var manifest = PoolManifest.Read(directory);
        var chosen = tasks?.ToList() is { Count: > 0 } names ? names.Select(manifest.Task).ToList() : manifest.Tasks.ToList();
        if (chosen.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"Task '{twice.Key}' is asked for {twice.Count()} times; each expert takes part once.");
        if (chosen.Count == 0)
            throw new ArgumentException($"The pool at {directory} has no task yet: add one with `mlmerge pool add --zoo {directory}` (an expert you have) or `mlmerge finetune --add-to {directory}`.");
        return new ExpertPool(directory, manifest, chosen);
    }

    /// <summary>True when the pool has a shared pre-trained base (task vectors are taken against it).</summary>
    public bool HasPretrained => Manifest.Pretrained is not null;

    /// <exception cref="InvalidOperationException">The pool has no pre-trained base.</exception>
    public IReadOnlyDictionary<string, Tensor> Pretrained =>
        (_pretrained ??= ModelCheckpoints.LoadBackbone(Path.Combine(Directory, Manifest.Pretrained
            ?? throw new InvalidOperationException($"The pool at {Directory} has no pre-trained base: task vectors cannot be formed.")))).Weights;

    /// <summary>
    /// The task's expert backbone. An expert that is a LoRA adapter folder (PEFT layout) is densified against the pool's
    /// pre-trained base, W0 + ΔW, so every algorithm treats adapter pools like pools of full experts.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Expert(string task)
    {
        if (!_experts.TryGetValue(task, out var expert))
        {
            string path = Path.Combine(Directory, Manifest.Task(task).Expert);
            expert = PeftAdapterFolder.IsAdapter(path) ? DensifiedAdapter(path) : ModelCheckpoints.LoadBackbone(path);
            if (!expert.Config.Equals(Config))
            {
                // A file replaced after the task was registered: every algorithm would read it by the pool's names.
                string differences = string.Join("; ", expert.Config.DifferencesFrom(Config, "the pool's"));
                expert.Dispose();
                throw new InvalidDataException($"The expert of task '{task}' ({Path.GetFullPath(path)}) is not a model of the pool's architecture ({differences}).");
            }
            _experts[task] = expert;
        }
        return expert.Weights;
    }

    /// <summary>True when the task's expert is a LoRA adapter folder rather than a checkpoint.</summary>
    public bool IsAdapterExpert(string task) => PeftAdapterFolder.IsAdapter(Path.Combine(Directory, Manifest.Task(task).Expert));

    private LoadedBackbone DensifiedAdapter(string path)
    {
        if (!HasPretrained)
            throw new InvalidOperationException($"The expert {path} is a LoRA adapter, and the pool at {Directory} has no pre-trained base to apply it to.");
        using var adapter = PeftAdapterFolder.Load(path, Config);
        return new LoadedBackbone(Config, adapter.Densify(Pretrained), new Dictionary<string, string>(), path);
    }

    /// <summary>The task's classification head, loaded on first use and owned by the pool.</summary>
    /// <exception cref="Checkpoints.CheckpointFormatException">The head file is malformed, or records another task or other class names.</exception>
    public ClassificationHead Head(string task)
    {
        if (!_heads.TryGetValue(task, out var head))
            _heads[task] = head = ModelCheckpoints.LoadHead(Path.Combine(Directory, Manifest.Task(task).Head), task, Manifest.Task(task).ClassNames);
        return head;
    }

    /// <summary>Every task's expert backbone, in task order (see <see cref="Expert"/>); loaded on first use and owned by the pool.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, Tensor>> Experts => Tasks.Select(t => Expert(t.Name)).ToList();

    /// <summary>
    /// The task's fixed splits, rebuilt from the package data or read from its image folder, and checked against the
    /// fingerprints recorded in the manifest.
    /// </summary>
    public TaskSplits LoadData(string task, BenchmarkSources? sources = null)
    {
        var zooTask = Manifest.Task(task);
        var splits = LoadSplits(zooTask, sources);
        // A class folder renamed in place keeps the pixels and labels the fingerprints cover, but not the names predictions carry.
        if (zooTask.Data?.Kind == TaskDataSource.ImageFolderKind && !splits.ClassNames.SequenceEqual(zooTask.ClassNames, StringComparer.Ordinal))
            throw new InvalidDataException(
                $"Task '{task}': the class folders of {ImageFolderPath(zooTask.Data)} are now ({string.Join(", ", splits.ClassNames)}), but the task was registered with " +
                $"({string.Join(", ", zooTask.ClassNames)}). Rename them back, or register the task again (`mlmerge pool add --replace`, or `mlmerge finetune --add-to --replace`).");
        foreach (var (split, data) in new[] { ("train", splits.Train), ("validation", splits.Validation), ("test", splits.Test) })
            if (zooTask.Fingerprints.TryGetValue(split, out var expected) && expected != data.Fingerprint)
                throw new InvalidDataException(
                    $"Task '{task}' {split} split differs from the one the zoo was built on (fingerprint {data.Fingerprint[..12]}…, zoo {expected[..12]}…): " +
                    (zooTask.Data?.Kind == TaskDataSource.ImageFolderKind
                        ? $"the images in {ImageFolderPath(zooTask.Data)} changed since the expert was trained. Restore them, or register the task again (`mlmerge pool add --replace`, or `mlmerge finetune --add-to --replace`)."
                        : "the installed data or font packages changed. Rebuild the zoo with `mlmerge zoo build`."));
        return splits;
    }

    private TaskSplits LoadSplits(PoolTask task, BenchmarkSources? sources)
    {
        var data = task.Data;
        switch (data?.Kind)
        {
            case null:
                return BenchmarkTasks.Get(task.Name).Load(sources, Manifest.RecipeSeed);
            case TaskDataSource.BenchmarkKind:
                return BenchmarkTasks.Get(data.Name ?? task.Name).Load(sources, data.Seed);
            case TaskDataSource.ImageFolderKind:
                var config = Config;
                if (Manifest.Preprocessing is { } preprocessing)
                {
                    if (preprocessing.CropSize != config.ImageSize || config.Channels != 3)
                        throw new InvalidDataException(
                            $"The pool at {Directory} crops images to {preprocessing.CropSize}×{preprocessing.CropSize} RGB but its model takes {config.ImageSize}×{config.ImageSize} with {config.Channels} channel(s).");
                    // Files were decoded whole when the task was registered; a later change shows in the split fingerprints.
                    return ImageFolderTask.Load(ImageFolderPath(data), preprocessing, data.Seed, data.ValidationFraction, data.TestFraction, task.Name, checkFiles: false);
                }
                return ImageFolderTask.Load(ImageFolderPath(data), config.ImageSize, config.Channels, data.Seed, data.ValidationFraction, data.TestFraction, task.Name);
            default:
                throw new InvalidDataException(
                    $"Task '{task.Name}' of the pool at {Directory} has data of kind '{data.Kind}'; expected {TaskDataSource.BenchmarkKind} or {TaskDataSource.ImageFolderKind}.");
        }
    }

    /// <summary>
    /// What a result made from this pool depends on, each with its content fingerprint: <c>base</c> (when the pool has one),
    /// <c>expert:TASK</c> and <c>head:TASK</c> for the pool's tasks (<see cref="CheckpointFingerprint"/>; a LoRA adapter
    /// folder adds its config's hash, a head its every byte). A copied result or an expert replaced in place no longer
    /// matches, which the pool's <see cref="PoolManifest.Identity"/> (its config and the base's relative path) cannot see.
    /// </summary>
    /// <exception cref="Checkpoints.CheckpointFormatException">A checkpoint of the pool is malformed or truncated.</exception>
    /// <param name="tasks">The tasks to include (default: <see cref="Tasks"/>); any task of the manifest may be named.</param>
    public IReadOnlyDictionary<string, string> InputFingerprints(IEnumerable<string>? tasks = null)
    {
        var fingerprints = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (Manifest.Pretrained is { } pretrained) fingerprints["base"] = OfModel(Path.Combine(Directory, pretrained));
        foreach (var task in tasks?.Select(Manifest.Task) ?? Tasks)
        {
            fingerprints["expert:" + task.Name] = OfModel(Path.Combine(Directory, task.Expert));
            fingerprints["head:" + task.Name] = CheckpointFingerprint.OfSmallFile(Path.Combine(Directory, task.Head));
            // The images: the splits' content fingerprints and how they were drawn. Another folder, other images or
            // another split seed make another run, though the models are the same files.
            if (task.Fingerprints.Count > 0)
                fingerprints["data:" + task.Name] = string.Join(";", task.Fingerprints.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));
        }

        return fingerprints;

        // An adapter's config is JSON text, which a checkout may store with other line endings: its parsed form is hashed.
        static string OfModel(string path) => PeftAdapterFolder.IsAdapter(path)
            ? CheckpointFingerprint.Of(Path.Combine(path, PeftAdapterFolder.WeightsFileName)) + "+" + CheckpointFingerprint.OfJsonFile(Path.Combine(path, PeftAdapterFolder.ConfigFileName))
            : CheckpointFingerprint.Of(path).ToString();
    }

    /// <summary>
    /// Every file the pool's models are read from: <c>pool.json</c>, the base, and each task's expert (every shard, or an
    /// adapter's config and weights), head and foundation. An output that would overwrite one of them is refused with it.
    /// </summary>
    /// <param name="tasks">The tasks to include (default: <see cref="Tasks"/>).</param>
    public IReadOnlyList<string> InputFiles(IEnumerable<string>? tasks = null)
    {
        var files = new List<string> { Path.GetFullPath(Path.Combine(Directory, PoolManifest.FileName)) };
        void Model(string path)
        {
            if (PeftAdapterFolder.IsAdapter(path))
            {
                files.Add(Path.Combine(path, PeftAdapterFolder.ConfigFileName));
                files.Add(Path.Combine(path, PeftAdapterFolder.WeightsFileName));
                return;
            }

            using var checkpoint = Checkpoint.Open(path);
            files.AddRange(checkpoint.Files);
            if (File.Exists(checkpoint.Source)) files.Add(checkpoint.Source);
        }

        if (Manifest.Pretrained is { } pretrained) Model(Path.Combine(Directory, pretrained));
        foreach (var task in tasks?.Select(Manifest.Task) ?? Tasks)
        {
            Model(Path.Combine(Directory, task.Expert));
            files.Add(Path.Combine(Directory, task.Head));
            if (task.Foundation is { } foundation) Model(Path.Combine(Directory, foundation));
        }

        return [.. files.Select(Path.GetFullPath).Distinct(StringComparer.Ordinal)];
    }

    /// <summary>The image folders the pool's tasks read (tasks of the built-in benchmark have none).</summary>
    public IReadOnlyList<string> ImageFolders() =>
        [.. Tasks.Where(t => t.Data is { Kind: TaskDataSource.ImageFolderKind }).Select(t => ImageFolderPath(t.Data!))];

    /// <summary>The image folder of a task, resolved against the pool directory when relative.</summary>
    public string ImageFolderPath(TaskDataSource data) =>
        Path.GetFullPath(data.Path ?? throw new InvalidDataException($"An image-folder task of the pool at {Directory} names no path."), Path.GetFullPath(Directory));

    /// <summary>Disposes every backbone and head the pool loaded.</summary>
    public void Dispose()
    {
        _pretrained?.Dispose();
        foreach (var e in _experts.Values) e.Dispose();
        foreach (var h in _heads.Values) h.Dispose();
    }
}
