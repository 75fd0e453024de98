using System.Globalization;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>What <see cref="PoolImport.AddExpert"/> registers: a user's own fine-tuned expert for one image-folder task.</summary>
public sealed record PoolExpertOptions
{
    /// <summary>The task's name in the pool.</summary>
    public required string Task { get; init; }

    /// <summary>The task's images: one sub-folder per class, PNG or JPEG of any size.</summary>
    public required string Images { get; init; }

    /// <summary>The fine-tuned checkpoint (file, sharded index, or Hugging Face model directory).</summary>
    public required string Expert { get; init; }

    /// <summary>The user's head (<c>head.weight</c>, ... as <see cref="ModelCheckpoints.SaveHead"/> writes); or use <see cref="Probe"/> or <see cref="ClassEmbeddings"/>.</summary>
    public string? Head { get; init; }

    /// <summary>Fit a linear-probe head on the pre-trained model's features of the training split.</summary>
    public bool Probe { get; init; }

    /// <summary>
    /// A CLIP zero-shot head: a .safetensors file with <c>class_embeddings</c> [classes, projection_dim] (text embeddings of
    /// the class names, rows in the class sub-folders' ordinal order) and optionally a scalar <c>logit_scale</c> (the scale, default 100).
    /// </summary>
    public string? ClassEmbeddings { get; init; }

    /// <summary>Copy the expert into the pool (<c>experts/&lt;task&gt;.safetensors</c>) instead of referring to it.</summary>
    public bool Copy { get; init; }

    /// <summary>Seed of the split and of the linear probe.</summary>
    public int Seed { get; init; }

    /// <summary>
    /// The checkpoint this expert was fine-tuned from, when it is not the pool's base (experts of different pre-trained
    /// models or initialisations: a non-local pool). Recorded by reference; the linear-probe baseline is measured on it,
    /// and <c>mlmerge align</c> matches foundations to each other. Required in a pool without a base.
    /// </summary>
    public string? Foundation { get; init; }

    /// <summary>Replace a task of the same name already in the pool (its entry and head); otherwise that is refused.</summary>
    public bool Replace { get; init; }

    /// <summary>Fraction of each class held out for validation (default 0.15).</summary>
    public double ValidationFraction { get; init; } = ImageFolderTask.ValidationFraction;

    /// <summary>Fraction of each class held out for test (default 0.15).</summary>
    public double TestFraction { get; init; } = ImageFolderTask.TestFraction;
}

/// <summary>
/// <c>mlmerge pool create</c> / <c>pool add</c>: a pool of experts a user fine-tuned elsewhere (e.g. Hugging Face CLIP
/// checkpoints), with each task's image folder. The base and experts are kept by reference unless copying is asked for:
/// a CLIP ViT-B/32 is ~350 MB, so eight copied experts would add ~3 GB beside files the user keeps anyway (and a Hugging Face
/// directory carries its <c>config.json</c> and <c>preprocessor_config.json</c> with it). Heads are small and always copied.
/// The manifest is written last, atomically.
/// </summary>
public static class PoolImport
{
    /// <summary>The tensor of a class-embeddings file.</summary>
    public const string ClassEmbeddingsName = "class_embeddings", LogitScaleName = "logit_scale";

    /// <summary>Creates an empty pool around <paramref name="baseCheckpoint"/>; its image preprocessing comes from the base's <c>preprocessor_config.json</c>.</summary>
    /// <exception cref="ArgumentException"><paramref name="poolDirectory"/> is already a pool.</exception>
    public static PoolManifest Create(string poolDirectory, string baseCheckpoint, bool copy = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(baseCheckpoint);
        return Create(poolDirectory, baseCheckpoint, modelLike: baseCheckpoint, copy);
    }

    /// <summary>
    /// Creates an empty pool without a shared base, for experts of different pre-trained models or initialisations (each
    /// task then names its <see cref="PoolExpertOptions.Foundation"/>): the architecture and image preprocessing are read
    /// from <paramref name="modelLike"/>, e.g. one of the experts. Weight-only merges need a base; <c>mlmerge align</c> makes
    /// one, the mean of the aligned foundations, and TACT on a simple average needs none.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="poolDirectory"/> is already a pool.</exception>
    public static PoolManifest CreateWithoutBase(string poolDirectory, string modelLike)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelLike);
        return Create(poolDirectory, baseCheckpoint: null, modelLike, copy: false);
    }

    private static PoolManifest Create(string poolDirectory, string? baseCheckpoint, string modelLike, bool copy)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(poolDirectory);
        if (PoolManifest.Exists(poolDirectory))
            throw new ArgumentException($"{poolDirectory} is already a pool ({PoolManifest.PathOf(poolDirectory)}): add tasks with `mlmerge pool add --zoo {poolDirectory}`.");
        // Loading checks the model is complete and finite before anything is written.
        using var backbone = ModelCheckpoints.LoadBackbone(modelLike);
        var preprocessing = PreprocessingOf(modelLike, backbone.Config);
        Directory.CreateDirectory(poolDirectory);
        string? pretrained = null;
        if (baseCheckpoint is not null && copy)
        {
            pretrained = PoolManifest.PretrainedFileName;
            ModelCheckpoints.SaveBackbone(Path.Combine(poolDirectory, pretrained), backbone.Config, backbone.Weights);
        }
        else if (baseCheckpoint is not null)
        {
            pretrained = PoolFineTuning.StoredFolderPath(poolDirectory, baseCheckpoint);
        }

        var manifest = new PoolManifest
        {
            Model = JsonDocument.Parse(backbone.Config.ToJson()).RootElement.Clone(),
            Pretrained = pretrained,
            Preprocessing = preprocessing,
            Tasks = [],
        };
        manifest.Write(poolDirectory);
        return manifest;
    }

    /// <summary>
    /// The preprocessing of a Hugging Face model directory (its <c>preprocessor_config.json</c>, or CLIP's square resize and crop
    /// at the model's image size when only <c>config.json</c> is there); null for the project's own checkpoints.
    /// </summary>
    public static ImagePreprocessing? PreprocessingOf(string checkpoint, VisionTransformerConfig config)
    {
        string directory = Directory.Exists(checkpoint) ? checkpoint : Path.GetDirectoryName(Path.GetFullPath(checkpoint))!;
        string file = Path.Combine(directory, ImagePreprocessing.HuggingFaceFileName);
        ImagePreprocessing? preprocessing = File.Exists(file)
            ? ImagePreprocessing.FromHuggingFace(File.ReadAllText(file), file)
            : File.Exists(Path.Combine(directory, "config.json")) ? ImagePreprocessing.Square(config.ImageSize) : null;
        if (preprocessing is not null && (preprocessing.CropSize != config.ImageSize || config.Channels != 3))
            throw new InvalidDataException(
                $"{file}: crop_size {preprocessing.CropSize} (RGB) does not fit the model's input {config.ImageSize}×{config.ImageSize} with {config.Channels} channel(s).");
        return preprocessing;
    }

    /// <summary>Registers a user's expert for the task in <see cref="PoolExpertOptions.Images"/>, measuring its accuracy with its head.</summary>
    public static PoolTask AddExpert(string poolDirectory, PoolExpertOptions options, IProgress<string>? phases = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!PoolFineTuning.TaskName.IsMatch(options.Task))
            throw new ArgumentException($"Task name '{options.Task}' is not usable: use letters, digits, '.', '_' or '-' (at most 64).");
        int heads = (options.Head is null ? 0 : 1) + (options.Probe ? 1 : 0) + (options.ClassEmbeddings is null ? 0 : 1);
        if (heads != 1)
            throw new ArgumentException("Give exactly one of --head <head.safetensors>, --probe and --class-embeddings <embeddings.safetensors>.");
        var manifest = PoolManifest.Read(poolDirectory);
        // Task names become file names (heads/<task>.safetensors): a name already there, in any case, is refused.
        if (manifest.Tasks.FirstOrDefault(t => string.Equals(t.Name, options.Task, StringComparison.OrdinalIgnoreCase)) is { } clash
            && !(options.Replace && clash.Name == options.Task))
            throw new ArgumentException($"The pool at {poolDirectory} already has a task '{clash.Name}': choose another --task name, or --replace to register it again.");
        var config = manifest.ModelConfig;
        // A LoRA adapter folder (PEFT layout) is an expert on the pool's base: its factors are checked against the pool's
        // architecture when it is loaded, and it has no config or processor of its own.
        bool adapter = PeftAdapterFolder.IsAdapter(options.Expert);
        if (adapter && (manifest.Pretrained is null || options.Foundation is not null))
            throw new ArgumentException($"The expert {options.Expert} is a LoRA adapter: it is applied to the pool's base, so the pool needs one and the task no --foundation.");
        if (!adapter) CheckConfig("Expert", options.Expert, config);
        // The adapter's config and factors are checked as a full expert's config is: before the images are read and probed.
        else
        {
            PeftAdapterFolder.Load(options.Expert, config).Dispose();
            if (manifest.Pretrained is { } poolBase) MergedAdapterBase.Ensure(options.Expert, Path.Combine(poolDirectory, poolBase), $"the base of the pool at {poolDirectory}");
        }
        if (options.Foundation is not null) CheckConfig("Foundation", options.Foundation, config);
        // Every task is read with the pool's preprocessing: an expert's own processor file is read as `pool create` reads the
        // base's, and one the pool could not reproduce (a resize other than to the crop) is refused the same way.
        if (!adapter) PreprocessingOf(options.Expert, config);
        // The features the linear-probe baseline reads: the expert's own starting point when named, else the shared base.
        string probedModel = options.Foundation ?? (manifest.Pretrained is { } shared ? Path.Combine(poolDirectory, shared)
            : throw new ArgumentException($"The pool at {poolDirectory} has no shared pre-trained base: name the model this expert was fine-tuned from with " +
                "--foundation (its features give the linear-probe baseline, and `mlmerge align` matches the foundations to each other)."));

        phases?.Report("loading the images");
        var data = new TaskDataSource
        {
            Kind = TaskDataSource.ImageFolderKind,
            Path = PoolFineTuning.StoredFolderPath(poolDirectory, options.Images),
            Seed = options.Seed,
            ValidationFraction = options.ValidationFraction,
            TestFraction = options.TestFraction,
        };
        var splits = manifest.Preprocessing is { } preprocessing
            ? ImageFolderTask.Load(options.Images, preprocessing, options.Seed, options.ValidationFraction, options.TestFraction, options.Task)
            : ImageFolderTask.Load(options.Images, config.ImageSize, config.Channels, options.Seed, options.ValidationFraction, options.TestFraction, options.Task);
        cancellation.ThrowIfCancellationRequested();
        foreach (string note in ImageFolderTask.Notes(options.Images)) phases?.Report("note: " + note);
        // Checked when a task is registered (a pool that already holds one keeps loading).
        if (splits.ClassNames.Count < 2)
            throw new ArgumentException($"{options.Images}: {splits.ClassNames.Count} class sub-folder(s) ({string.Join(", ", splits.ClassNames)}); a classification task needs at least two.");

        using var pretrained = ModelCheckpoints.LoadBackbone(probedModel);
        phases?.Report(options.Foundation is null ? "linear probe on the pre-trained features" : "linear probe on the foundation's features");
        using var probe = ExpertTrainer.TrainLinearProbe(config, pretrained.Weights, splits.Train, new ZooRecipe().LinearProbe, options.Seed, cancellation: cancellation);
        var probeAccuracy = ExpertTrainer.Evaluate(config, pretrained.Weights, probe, splits);
        cancellation.ThrowIfCancellationRequested();

        using var expert = adapter ? Densified(options.Expert, config, pretrained) : ModelCheckpoints.LoadBackbone(options.Expert);
        using var ownHead = options.Probe ? null : options.Head is { } headPath
            ? UserHead(headPath, options.Task, splits.ClassNames, config)
            : ZeroShotHead(options.ClassEmbeddings!, splits.ClassNames, config);
        var head = ownHead ?? probe;
        if (head.FeatureDim != config.FeatureDim)
            throw new ArgumentException($"The head {options.Head} takes {head.FeatureDim} features; the model gives {config.FeatureDim}.");
        phases?.Report("evaluation");
        var individual = ExpertTrainer.Evaluate(config, expert.Weights, head, splits);

        // Written under staging names and moved in just before pool.json (with --replace, the old head and expert stay a pair until then).
        Directory.CreateDirectory(Path.Combine(poolDirectory, "heads"));
        string headFile = $"heads/{options.Task}.safetensors";
        using var staging = new PoolStaging(poolDirectory);
        ModelCheckpoints.SaveHead(staging.PathFor(headFile), head, task: options.Task);
        string expertFile = PoolFineTuning.StoredFolderPath(poolDirectory, options.Expert);
        if (options.Copy)
        {
            string copied = adapter ? $"experts/{options.Task}" : $"experts/{options.Task}.safetensors";
            // Registering the pool's own copy again (--replace after the images changed): nothing to copy.
            if (!string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.Expert)), Path.GetFullPath(Path.Combine(poolDirectory, copied)), StringComparison.Ordinal))
            {
                Directory.CreateDirectory(Path.Combine(poolDirectory, "experts"));
                string target = staging.PathFor(copied);
                if (adapter)
                {
                    // The adapter stays an adapter: its two files are copied, not the densified model.
                    Directory.CreateDirectory(target);
                    foreach (string name in new[] { PeftAdapterFolder.ConfigFileName, PeftAdapterFolder.WeightsFileName })
                        File.Copy(Path.Combine(options.Expert, name), Path.Combine(target, name), overwrite: true);
                }
                else
                {
                    ModelCheckpoints.SaveBackbone(target, config, expert.Weights);
                }
            }
            expertFile = copied;
        }

        cancellation.ThrowIfCancellationRequested();
        string? previous = manifest.Tasks.FirstOrDefault(t => t.Name == options.Task)?.Expert;
        staging.Commit();
        var registered = Register(expertFile);
        // A replaced task whose copied expert changed kind (a file, a folder) leaves the other one behind: removed.
        if (options.Copy && previous != expertFile && (previous == $"experts/{options.Task}" || previous == $"experts/{options.Task}.safetensors"))
        {
            string path = Path.Combine(poolDirectory, previous);
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else if (File.Exists(path)) File.Delete(path);
        }

        return registered;

        PoolTask Register(string expertFile)
        {
            string source = $"image folder {Path.GetFullPath(options.Images)}; expert {Path.GetFullPath(options.Expert)}; head " +
                (options.Probe ? "linear probe on the pre-trained features" : options.Head is not null ? Path.GetFullPath(options.Head) : $"zero-shot from {Path.GetFullPath(options.ClassEmbeddings!)}");
            if (options.Foundation is not null) source += $"; fine-tuned from {Path.GetFullPath(options.Foundation)}";
            var task = PoolTask.FromSplits(options.Task, source, data, splits, expertFile, headFile, probeAccuracy, individual) with
            {
                Foundation = options.Foundation is null ? null : PoolFineTuning.StoredFolderPath(poolDirectory, options.Foundation),
            };
            manifest.WithTask(task).Write(poolDirectory);
            return task;
        }
    }

    /// <summary>An adapter folder applied to the base it adapts: W0 + ΔW for every adapted tensor.</summary>
    private static LoadedBackbone Densified(string adapterFolder, VisionTransformerConfig config, LoadedBackbone pretrained)
    {
        using var adapter = PeftAdapterFolder.Load(adapterFolder, config);
        return new LoadedBackbone(config, adapter.Densify(pretrained.Weights), new Dictionary<string, string>(), adapterFolder);
    }

    /// <summary>
    /// Refuses a checkpoint whose architecture or preprocessing differs from the pool's, naming each field that differs
    /// (e.g. <c>activation: gelu, the pool's quick_gelu</c>).
    /// </summary>
    private static void CheckConfig(string role, string checkpoint, VisionTransformerConfig config)
    {
        var other = ModelCheckpoints.ReadConfig(checkpoint);
        if (other.Equals(config)) return;
        var differences = other.DifferencesFrom(config, "the pool's");
        throw new ArgumentException($"{role} {checkpoint} does not fit the pool's model ({(differences.Count > 0 ? string.Join("; ", differences) : other.ToJson())}): " +
            "experts of one pool share the architecture and preprocessing.");
    }

    /// <summary>
    /// A user's head: one this library saved (kind and class names in its metadata, checked against the task), or a plain
    /// linear layer as PyTorch writes it (<c>weight</c> [classes, features] and <c>bias</c> [classes], or the same under
    /// <c>head.</c>), whose classes are then the sub-folders in ordinal order.
    /// </summary>
    public static ClassificationHead UserHead(string path, string task, IReadOnlyList<string> classNames, VisionTransformerConfig config)
    {
        using (var probe = Checkpoint.Open(path))
        {
            if (!probe.Metadata.ContainsKey(ClassificationHead.KindMetadataKey))
            {
                string? weightName = new[] { ClassificationHead.WeightName, "weight" }.FirstOrDefault(probe.Contains);
                string? biasName = new[] { ClassificationHead.BiasName, "bias" }.FirstOrDefault(probe.Contains);
                if (weightName is null || biasName is null)
                    throw new CheckpointFormatException(probe.Source, weightName is null ? "weight" : "bias",
                        $"missing: a head file holds '{ClassificationHead.WeightName}' and '{ClassificationHead.BiasName}' (or 'weight' and 'bias') of a linear layer [{classNames.Count}, {config.FeatureDim}].");
                using var scope = NewDisposeScope();
                var weight = probe.ReadTensor(weightName);
                var bias = probe.ReadTensor(biasName);
                if (weight.dim() != 2 || weight.shape[0] != classNames.Count || weight.shape[1] != config.FeatureDim)
                    throw new CheckpointFormatException(probe.Source, weightName,
                        $"shape [{string.Join(", ", weight.shape)}], expected [{classNames.Count}, {config.FeatureDim}] ({classNames.Count} classes: {string.Join(", ", classNames)}; {config.FeatureDim} features).");
                if (bias.dim() != 1 || bias.shape[0] != classNames.Count)
                    throw new CheckpointFormatException(probe.Source, biasName, $"shape [{string.Join(", ", bias.shape)}], expected [{classNames.Count}].");
                var head = ClassificationHead.Linear(classNames, weight, bias);
                foreach (var parameter in head.Parameters) parameter.DetachFromDisposeScope();
                return head;
            }
        }
        return ModelCheckpoints.LoadHead(path, task, classNames);
    }

    /// <summary>A CLIP head from a class-embeddings file (<see cref="ClassEmbeddingsName"/> [classes, projection_dim], optional <see cref="LogitScaleName"/>).</summary>
    public static ClassificationHead ZeroShotHead(string path, IReadOnlyList<string> classNames, VisionTransformerConfig config)
    {
        using var file = Checkpoint.Open(path);
        if (!file.Contains(ClassEmbeddingsName))
            throw new CheckpointFormatException(file.Source, ClassEmbeddingsName,
                $"no tensor '{ClassEmbeddingsName}': expected the class-name text embeddings [{classNames.Count}, {config.FeatureDim}], one row per class sub-folder in ordinal order ({string.Join(", ", classNames)}).");
        using var scope = NewDisposeScope();
        var embeddings = file.ReadTensor(ClassEmbeddingsName);
        if (embeddings.dim() != 2 || embeddings.shape[0] != classNames.Count || embeddings.shape[1] != config.FeatureDim)
            throw new CheckpointFormatException(file.Source, ClassEmbeddingsName,
                $"shape [{string.Join(", ", embeddings.shape)}], expected [{classNames.Count}, {config.FeatureDim}] ({classNames.Count} classes × the model's " +
                (config.ProjectionDim is null ? "width: a model without visual_projection" : "projection_dim") + ").");
        double scale = ClassificationHead.DefaultClipLogitScale;
        if (file.Contains(LogitScaleName))
        {
            var stored = file.ReadTensor(LogitScaleName);
            if (stored.numel() != 1) throw new CheckpointFormatException(file.Source, LogitScaleName, $"expected one value, got shape [{string.Join(", ", stored.shape)}].");
            scale = stored.item<float>();
        }
        var head = ClassificationHead.Clip(classNames, embeddings, scale);
        foreach (var parameter in head.Parameters) parameter.DetachFromDisposeScope();
        return head;
    }


    /// <summary>A one-line summary of a registered task, for the CLI.</summary>
    public static string Describe(PoolTask task) => string.Create(CultureInfo.InvariantCulture,
        $"{task.Name}: {task.Train} train / {task.Validation} validation / {task.Test} test images, {task.ClassNames.Count} classes; " +
        $"test accuracy: linear probe on the pre-trained model {100 * task.PretrainedLinearProbe.Test:F1}%, expert {100 * task.Individual.Test:F1}%");
}
