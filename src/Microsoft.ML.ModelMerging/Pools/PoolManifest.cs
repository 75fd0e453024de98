using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>
/// Where a task's images come from: a built-in benchmark task (<see cref="Kind"/> <c>benchmark</c>, rebuilt from the
/// package data) or a user's image folder with one sub-folder per class (<c>image-folder</c>), split seeded and stratified.
/// </summary>
public sealed record TaskDataSource
{
    /// <see cref="Kind"/> of a built-in benchmark task.
    public const string BenchmarkKind = "benchmark";
    /// <see cref="Kind"/> of a user's image folder.
    public const string ImageFolderKind = "image-folder";

    /// <summary><c>benchmark</c> or <c>image-folder</c>.</summary>
    public required string Kind { get; init; }

    /// <summary>The benchmark task's name (<c>benchmark</c>); null means the pool task's own name.</summary>
    public string? Name { get; init; }

    /// <summary>The image folder (<c>image-folder</c>): relative to the pool directory, or absolute.</summary>
    public string? Path { get; init; }

    /// <summary>Seed of the split.</summary>
    public int Seed { get; init; }

    /// <summary>Image folders: fraction of each class held out for validation.</summary>
    public double ValidationFraction { get; init; } = ImageFolderTask.ValidationFraction;

    /// <summary>Image folders: fraction of each class held out for test.</summary>
    public double TestFraction { get; init; } = ImageFolderTask.TestFraction;
}

/// <summary>How a pool task's expert was made (what <c>mlmerge finetune</c> ran); null for experts brought from elsewhere.</summary>
public sealed record ExpertRecipe
{
    /// <summary>
    /// <c>full</c>: every backbone weight fine-tuned with the head frozen; <c>lora</c> / <c>l-lora</c>: only a LoRA
    /// adapter (partially linearised for <c>l-lora</c>), the backbone and head frozen.
    /// </summary>
    public string Mode { get; init; } = "full";

    /// <summary>Seed of the training: the probe head's initialisation, the batch order and the augmentation (a LoRA adapter's A comes from <see cref="LoraSeed"/>).</summary>
    public int Seed { get; init; }

    /// <summary>Images per class the linear-probe head was fitted on; 0 = the whole training split.</summary>
    public int ProbeShots { get; init; }

    /// <summary>The linear probe's training; null when an existing head was used (<see cref="Head"/>).</summary>
    public TrainingOptions? LinearProbe { get; init; }

    /// <summary>The fine-tuning of the backbone (or of the adapter).</summary>
    public required TrainingOptions FineTuning { get; init; }

    /// <summary>The existing head the expert was trained behind (relative to the pool), when no probe was fitted.</summary>
    public string? Head { get; init; }

    /// <summary>Adapters: the rank r.</summary>
    public int? Rank { get; init; }

    /// <summary>Adapters: lora_alpha (scale alpha/r).</summary>
    public double? Alpha { get; init; }

    /// <summary>Adapters: the target modules by short name.</summary>
    public IReadOnlyList<string>? Targets { get; init; }

    /// <summary>Adapters: the seed of the shared initialisation φ0.</summary>
    public int? LoraSeed { get; init; }
}

/// <summary>One task of a pool: where its data comes from, its fixed splits, its expert and head, and their measured accuracies.</summary>
public sealed record PoolTask
{
    /// <summary>The task's name (unique in the pool; it names the ONNX output <c>scores_&lt;task&gt;</c>).</summary>
    public required string Name { get; init; }
    /// <summary>A human-readable description of where the images come from (package, folder).</summary>
    public required string Source { get; init; }
    /// <summary>How to load the task's images; null = the built-in benchmark task of this name with the zoo recipe's seed.</summary>
    public TaskDataSource? Data { get; init; }
    /// <summary>Class names in class-index order.</summary>
    public required IReadOnlyList<string> ClassNames { get; init; }
    /// <summary>Number of training images.</summary>
    public required int Train { get; init; }
    /// <summary>Number of validation images.</summary>
    public required int Validation { get; init; }
    /// <summary>Number of test images.</summary>
    public required int Test { get; init; }
    /// <summary>SHA-256 of each split's pixels and labels: a rebuilt data set that differs is noticed.</summary>
    public required IReadOnlyDictionary<string, string> Fingerprints { get; init; }
    /// <summary>The expert checkpoint, relative to the pool directory.</summary>
    public required string Expert { get; init; }
    /// <summary>The classification head checkpoint, relative to the pool directory.</summary>
    public required string Head { get; init; }
    /// <summary>A linear probe on the pre-trained features (what the task gains from fine-tuning).</summary>
    public required SplitAccuracy PretrainedLinearProbe { get; init; }
    /// <summary>The expert with its head: the reference every merge is normalised by.</summary>
    public required SplitAccuracy Individual { get; init; }
    /// <summary>How the expert was trained, when this project trained it.</summary>
    public ExpertRecipe? Training { get; init; }
    /// <summary>
    /// The checkpoint the expert was fine-tuned from, relative to the pool directory, when the experts of the pool do not
    /// all start from <see cref="PoolManifest.Pretrained"/> (a non-local pool: experts of differently seeded foundations).
    /// Alignment matches foundations to each other and moves each expert with its foundation's permutation.
    /// </summary>
    public string? Foundation { get; init; }

    /// <summary>The fingerprints of a task's three splits, as <see cref="Fingerprints"/> records them.</summary>
    public static SortedDictionary<string, string> FingerprintsOf(Data.TaskSplits splits) => new(StringComparer.Ordinal)
    {
        ["train"] = splits.Train.Fingerprint, ["validation"] = splits.Validation.Fingerprint, ["test"] = splits.Test.Fingerprint,
    };

    /// <summary>
    /// The entry of a task whose images are <paramref name="splits"/>: class names, split sizes and fingerprints from the
    /// splits, accuracies rounded as manifests record them.
    /// </summary>
    public static PoolTask FromSplits(string name, string source, TaskDataSource? data, Data.TaskSplits splits, string expert, string head,
        SplitAccuracy pretrainedLinearProbe, SplitAccuracy individual) => new()
    {
        Name = name,
        Source = source,
        Data = data,
        ClassNames = splits.ClassNames,
        Train = splits.Train.Count,
        Validation = splits.Validation.Count,
        Test = splits.Test.Count,
        Fingerprints = FingerprintsOf(splits),
        Expert = expert,
        Head = head,
        PretrainedLinearProbe = pretrainedLinearProbe.Rounded(),
        Individual = individual.Rounded(),
    };
}

/// <summary>The zoo's pre-training stage as built: corpus, classes, size, fingerprint, accuracy of its own head on held-out glyphs.</summary>
public sealed record PoolPretraining
{
    /// <summary>The pre-training corpus's name.</summary>
    public required string Corpus { get; init; }
    /// <summary>Number of pre-training classes.</summary>
    public required int Classes { get; init; }
    /// <summary>Number of pre-training images.</summary>
    public required int Train { get; init; }
    /// <summary>SHA-256 of the corpus's pixels and labels.</summary>
    public required string Fingerprint { get; init; }
    /// <summary>Accuracy of the pre-training head on held-out images of the corpus.</summary>
    public required double ValidationAccuracy { get; init; }
}

/// <summary>How an aligned pool was made: the pool it was aligned from, the reference task, and the method.</summary>
public sealed record PoolAlignmentRecord
{
    /// <summary>The source pool's directory as given to <c>mlmerge align</c>.</summary>
    public required string Source { get; init; }
    /// <summary>The task whose expert (or foundation) every other one was permuted to match.</summary>
    public required string Reference { get; init; }
    /// <summary><c>weight-matching</c> (or <c>activation-matching</c>).</summary>
    public required string Method { get; init; }
    /// <summary>The seed of the random order in which permutation groups are visited.</summary>
    public int Seed { get; init; }
}

/// <summary>
/// <c>pool.json</c>, the manifest of an expert pool: the model config, the pre-trained base (optional: the experts of a
/// non-local pool need not share one), and per task its data, expert, head and measured accuracies. The committed zoo is
/// one pool (with its build recipe); <c>mlmerge finetune --add-to</c> makes and extends others. Paths are relative to the
/// pool directory. Deterministic content (no timings), so a rebuild that reproduces a pool reproduces this file too.
/// </summary>
public sealed record PoolManifest
{
    /// <summary>The manifest's file name, <c>pool.json</c>.</summary>
    public const string FileName = "pool.json";
    /// <summary>The manifest name of pools written before pools had their own name; read, never written.</summary>
    public const string LegacyFileName = "zoo.json";
    /// <summary>File name of the pre-trained base in a pool made here, <c>pretrained.safetensors</c>.</summary>
    public const string PretrainedFileName = "pretrained.safetensors";

    /// <summary>Version of the manifest's layout (2; version 1 is still read).</summary>
    public int Format { get; init; } = 2;
    /// <summary>The zoo recipe's hash (pools built by <c>mlmerge zoo build</c>); null for other pools.</summary>
    public string? RecipeHash { get; init; }
    /// <summary>The zoo build recipe; null for other pools.</summary>
    public JsonElement? Recipe { get; init; }
    /// <summary>The Vision Transformer config every checkpoint of the pool has.</summary>
    public required JsonElement Model { get; init; }
    /// <summary>The pre-trained base checkpoint, relative to the pool directory; null for a pool without a shared base.</summary>
    public string? Pretrained { get; init; }
    /// <summary>
    /// How image-folder tasks are read (a Hugging Face base's <c>preprocessor_config.json</c>: shortest side, centre crop,
    /// RGB); null = the older reading at the model's image size and channel count.
    /// </summary>
    public ImagePreprocessing? Preprocessing { get; init; }
    /// <summary>The zoo's pre-training stage (pools built by <c>mlmerge zoo build</c>); null for other pools.</summary>
    public PoolPretraining? Pretraining { get; init; }
    /// <summary>What <c>mlmerge align</c> did to make this pool from another; null for a pool that was not aligned.</summary>
    public PoolAlignmentRecord? Alignment { get; init; }
    /// <summary>The tasks, in order (the order of experts everywhere else).</summary>
    public required IReadOnlyList<PoolTask> Tasks { get; init; }

    /// <see cref="Model"/> parsed as a <see cref="VisionTransformerConfig"/>.
    [JsonIgnore]
    public VisionTransformerConfig ModelConfig => VisionTransformerConfig.FromJson(Model.GetRawText());

    /// <summary>
    /// What results made from this pool (adaptation runs) are tied to: the recipe hash of a built zoo, else a hash of the
    /// model config and the base's path. Adding a task keeps it, so earlier runs on other tasks stay loadable. A WEMoE
    /// result checks the tensors it rebuilds from the pool's checkpoints when loaded; a merged backbone (AdaMerging, Fisher,
    /// RegMean) is saved whole and is paired with the pool's current heads, so an expert replaced after the run is not noticed.
    /// </summary>
    /// <remarks>
    /// An aligned pool has its own identity: its experts are permuted copies, so a result of the source pool is not its result.
    /// </remarks>
    [JsonIgnore]
    public string Identity => Alignment is null ? UnalignedIdentity : HashOf(UnalignedIdentity + "\n" + JsonSerializer.Serialize(Alignment, Options));

    private string UnalignedIdentity => RecipeHash ?? HashOf(Model.GetRawText() + "\n" + (Pretrained ?? ""));

    private static string HashOf(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];

    /// <summary>The seed of the zoo recipe, used by benchmark tasks without their own <see cref="TaskDataSource"/>; 0 otherwise.</summary>
    [JsonIgnore]
    public int RecipeSeed => Recipe is { ValueKind: JsonValueKind.Object } recipe && recipe.TryGetProperty("seed", out var seed) ? seed.GetInt32() : 0;

    /// <summary>The task of that name.</summary>
    /// <exception cref="ArgumentException">The pool has no such task; the message lists the ones it has.</exception>
    public PoolTask Task(string name) => Tasks.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException(
            $"The pool has no task '{name}'; it has {(Tasks.Count == 0 ? "none" : string.Join(", ", Tasks.Select(t => t.Name)))}.");

    /// <summary>
    /// The tasks whose expert checkpoint is one of <paramref name="expertPaths"/> (compared as full paths, a trailing separator
    /// ignored), in manifest order.
    /// </summary>
    public IReadOnlyList<PoolTask> TasksWithExperts(string poolDirectory, IEnumerable<string> expertPaths)
    {
        static string Normal(string path) => Path.TrimEndingDirectorySeparator(path);
        var paths = expertPaths.Select(p => Normal(Path.GetFullPath(p))).ToHashSet(StringComparer.Ordinal);
        return [.. Tasks.Where(t => paths.Contains(Normal(Path.GetFullPath(t.Expert, Path.GetFullPath(poolDirectory)))))];
    }

    /// <summary>The manifest with <paramref name="task"/> appended, or replacing the task of the same name in place.</summary>
    public PoolManifest WithTask(PoolTask task) => this with
    {
        Tasks = Tasks.Any(t => t.Name == task.Name) ? [.. Tasks.Select(t => t.Name == task.Name ? task : t)] : [.. Tasks, task],
    };

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        // Optional parts (a zoo's recipe, a user task's data source) are left out rather than written as null.
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The manifest as indented snake_case JSON, optional parts left out (what <see cref="Write"/> stores).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>The manifest path of a pool directory (<c>pool.json</c>, or a legacy <c>zoo.json</c>), or the file given.</summary>
    public static string PathOf(string pool)
    {
        if (!Directory.Exists(pool)) return pool;
        string path = Path.Combine(pool, FileName);
        string legacy = Path.Combine(pool, LegacyFileName);
        return !File.Exists(path) && File.Exists(legacy) ? legacy : path;
    }

    /// <summary>True when <paramref name="pool"/> is a directory holding a pool manifest.</summary>
    public static bool Exists(string pool) => Directory.Exists(pool) && File.Exists(PathOf(pool));

    /// <summary>Reads the manifest of a pool directory (or the manifest file given).</summary>
    /// <exception cref="FileNotFoundException">No manifest there.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid manifest, or of a format this version does not read.</exception>
    public static PoolManifest Read(string pool)
    {
        string path = PathOf(pool);
        if (!File.Exists(path))
            throw new FileNotFoundException(
                $"No {FileName} at {path}: is this a pool directory? Pools are made by `mlmerge pool create` (experts you have) then `pool add`, by `mlmerge finetune --add-to <dir>`, or by `mlmerge zoo build`.", path);
        PoolManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<PoolManifest>(File.ReadAllText(path), Options)
                ?? throw new InvalidDataException($"{path}: empty manifest.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid pool manifest: {e.Message}", e);
        }

        return manifest.Format is >= 1 and <= 2
            ? manifest
            : throw new InvalidDataException($"{path}: pool manifest format {manifest.Format}; this version reads formats 1 and 2.");
    }

    /// <summary>Writes <c>pool.json</c> atomically (a temporary file renamed into place).</summary>
    public void Write(string directory)
    {
        string path = Path.Combine(directory, FileName);
        string temp = path + ".partial";
        File.WriteAllText(temp, ToJson() + "\n");
        File.Move(temp, path, overwrite: true);
    }
}
