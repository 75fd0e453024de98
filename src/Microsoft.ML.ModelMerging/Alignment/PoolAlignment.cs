using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>Settings of <see cref="PoolAlignment.Run"/>.</summary>
public sealed record PoolAlignmentOptions
{
    /// <summary>The task whose expert (or foundation) the others are matched to; null = the pool's first task.</summary>
    public string? Reference { get; init; }

    /// <summary>Seed of weight matching's group order.</summary>
    public int Seed { get; init; }

    /// <summary>Passes of weight matching at most, per model matched.</summary>
    public int MaxIterations { get; init; } = 100;

    /// <summary>Replace an output directory that exists and is not empty.</summary>
    public bool Force { get; init; }

    /// <summary><see cref="PoolAlignment.Method"/> (weights only) or <see cref="PoolAlignment.ActivationMethod"/> (images of the pool's tasks).</summary>
    public string Method { get; init; } = PoolAlignment.Method;

    /// <summary>Activation matching: training images per task (the first of a seeded shuffle), read unlabeled.</summary>
    public int ImagesPerTask { get; init; } = 64;
}

/// <summary>One model's distance to its reference before and after alignment, and the weight-matching passes it took.</summary>
/// <param name="Name">The task (an expert) or the foundation's file (a foundation).</param>
/// <param name="DistanceBefore">L2 distance of all backbone weights to the reference, as the source pool holds them.</param>
/// <param name="DistanceAfter">The same after the permutation.</param>
/// <param name="Iterations">Weight-matching passes (0 for the reference itself; for an expert moved with its foundation, the foundation's).</param>
/// <param name="Converged">False when weight matching stopped at its iteration limit.</param>
public sealed record AlignedModel(string Name, double DistanceBefore, double DistanceAfter, int Iterations, bool Converged);

/// <summary>What <see cref="PoolAlignment.Run"/> wrote.</summary>
/// <param name="Manifest">The aligned pool's manifest (written as its <c>pool.json</c>).</param>
/// <param name="Directory">The aligned pool's directory.</param>
/// <param name="NonLocal">True when foundations were matched (tasks with a <see cref="PoolTask.Foundation"/>), false when experts were.</param>
/// <param name="Experts">Every expert, in task order, with its distance to the reference task's expert.</param>
/// <param name="Foundations">Every foundation (non-local pools), with its distance to the reference task's foundation.</param>
public sealed record PoolAlignmentResult(PoolManifest Manifest, string Directory, bool NonLocal, IReadOnlyList<AlignedModel> Experts, IReadOnlyList<AlignedModel> Foundations);

/// <summary>A step of <see cref="PoolAlignment.Run"/>: what it is doing, and how many of the models it has done.</summary>
public sealed record PoolAlignmentProgress(string Stage, int Done, int Total);

/// <summary>
/// Writes a permutation-aligned copy of a pool: every expert permuted (with its head) so its weights lie close to a
/// reference task's, without changing what any expert computes. Merging methods average weights unit by unit, which only
/// makes sense when unit i of one model does the job of unit i of another.
/// </summary>
/// <remarks>
/// <para>Non-local pool (tasks with a <see cref="PoolTask.Foundation"/>: experts fine-tuned from differently seeded
/// foundations): each foundation is matched to the reference task's foundation by <see cref="WeightMatching"/>, and the
/// foundation, its experts and their heads are moved with that permutation. The aligned pool's <c>pretrained</c> is the
/// element-wise mean of the aligned foundations, the base tact-merge merges against (lerp(0.5, init_a, aligned init_b) for
/// two). Tasks without a foundation count as fine-tuned from the source's <c>pretrained</c>.</para>
/// <para>Otherwise each expert is matched directly to the reference task's expert and the pre-trained base, if any, is
/// copied unchanged. Experts fine-tuned from one shared base are aligned already (the base is their common origin):
/// permuting them moves them away from it, so task vectors against that base stop meaning anything. Alignment is for
/// experts that share no base.</para>
/// <para>The manifest keeps everything else (data, fingerprints, accuracies: permutations do not change a model's
/// predictions) and records <see cref="PoolManifest.Alignment"/>, which gives the aligned pool its own identity. The pool
/// is written under a temporary name and renamed when complete, so a cancelled or failed run leaves nothing at the
/// output.</para>
/// </remarks>
public static class PoolAlignment
{
    /// <summary>Weight matching, the default <see cref="PoolAlignmentRecord.Method"/>.</summary>
    public const string Method = "weight-matching";

    /// <summary>Activation matching (<see cref="ActivationMatching"/>).</summary>
    public const string ActivationMethod = "activation-matching";

    /// <summary>Metadata key of aligned checkpoints: the task they were aligned to.</summary>
    public const string AlignedToMetadataKey = "mlmerge.aligned_to";

    private const string ExpertsFolder = "experts", HeadsFolder = "heads", FoundationsFolder = "foundations";

    /// <summary>Aligns the tasks of <paramref name="pool"/> and writes the aligned pool to <paramref name="output"/>.</summary>
    /// <exception cref="ArgumentException">The reference task is not in the pool, or the output is unusable (exists and is
    /// not empty without <see cref="PoolAlignmentOptions.Force"/>, is the pool itself or holds it).</exception>
    /// <exception cref="InvalidDataException">A task has no foundation and the pool no pre-trained base (non-local pools).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; nothing was written at <paramref name="output"/>.</exception>
    public static PoolAlignmentResult Run(ExpertPool pool, string output, PoolAlignmentOptions? options = null,
        IProgress<PoolAlignmentProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentException.ThrowIfNullOrWhiteSpace(output);
        options ??= new PoolAlignmentOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxIterations, nameof(options.MaxIterations));
        string reference = options.Reference ?? pool.Tasks[0].Name;
        if (pool.TaskNames.FirstOrDefault(pool.IsAdapterExpert) is { } adapted)
            throw new ArgumentException($"The expert of task '{adapted}' in {pool.Directory} is a LoRA adapter: alignment permutes full checkpoints, " +
                "and an adapter fine-tuned on the pool's base shares that base's units already.");
        if (options.Method is not (Method or ActivationMethod))
            throw new ArgumentException($"Unknown alignment method '{options.Method}': {Method} or {ActivationMethod}.");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.ImagesPerTask, nameof(options.ImagesPerTask));
        if (!pool.TaskNames.Contains(reference, StringComparer.Ordinal))
            throw new ArgumentException($"The pool at {pool.Directory} has no task '{reference}' to align to; its tasks: {string.Join(", ", pool.TaskNames)}.");
        string target = CheckOutput(pool, output, options.Force);
        // Every model is permuted by the pool's architecture: one of another is named now, not after the work.
        foreach (var task in pool.Tasks)
        {
            foreach (string? relative in new[] { task.Expert, task.Foundation })
            {
                if (relative is null) continue;
                string path = Path.Combine(pool.Directory, relative);
                var config = ModelCheckpoints.ReadConfig(path);
                if (!config.Equals(pool.Config))
                    throw new InvalidDataException($"The {(relative == task.Expert ? "expert" : "foundation")} of task '{task.Name}' ({Path.GetFullPath(path)}) is not a model of the pool's architecture " +
                        $"({string.Join("; ", config.DifferencesFrom(pool.Config, "the pool's"))}).");
            }
        }

        // What an earlier run killed before its cleanup left beside the output (a process that no longer exists).
        TemporaryFiles.RemoveStaleDirectories(Path.GetDirectoryName(target)!, Path.GetFileName(target));
        string temporary = TemporaryFiles.For(target);
        Directory.CreateDirectory(temporary);
        try
        {
            using var work = new Writer(pool, reference, options, temporary, target, progress, cancellation);
            var result = pool.Tasks.Any(t => t.Foundation is not null) ? work.NonLocal() : work.Local();
            var manifest = pool.Manifest with
            {
                Pretrained = result.Pretrained,
                Alignment = new PoolAlignmentRecord { Source = pool.Directory, Reference = reference, Method = options.Method, Seed = options.Seed },
                Tasks = result.Tasks,
            };
            manifest.Write(temporary);
            cancellation.ThrowIfCancellationRequested();
            MoveIntoPlace(temporary, target);
            return new PoolAlignmentResult(manifest, target, result.Foundations.Count > 0, result.Experts, result.Foundations);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    /// <summary>The output's full path, once it is known not to destroy anything the caller did not ask to replace.</summary>
    private static string CheckOutput(ExpertPool pool, string output, bool force)
    {
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        string source = Path.TrimEndingDirectorySeparator(Path.GetFullPath(pool.Directory));
        if (File.Exists(target)) throw new ArgumentException($"The output {output} is a file; give a directory for the aligned pool.");
        // Windows and macOS file systems ignore case by default: C:\Data\Models holds C:\data\models\x.
        var comparison = OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;
        bool Holds(string path) => string.Equals(path, target, comparison) || path.StartsWith(target + Path.DirectorySeparatorChar, comparison);
        if (Holds(source))
            throw new ArgumentException($"The output {output} is or holds the pool being aligned; give another directory.");
        // A replaced output is deleted whole, so --force must not reach the models or images the pool refers to.
        if (pool.InputFiles().Concat(pool.ImageFolders()).Select(p => Path.TrimEndingDirectorySeparator(Path.GetFullPath(p))).FirstOrDefault(Holds) is { } input)
            throw new ArgumentException($"The output {output} holds {input}, which the pool being aligned reads; give another directory.");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !force)
            throw new ArgumentException($"The output {output} exists and is not empty; give another directory, or --force to replace it.");
        return target;
    }

    /// <summary>Renames the finished pool to the output name; an output being replaced is removed only after that.</summary>
    private static void MoveIntoPlace(string temporary, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(temporary, target);
            return;
        }

        string old = TemporaryFiles.For(target);
        Directory.Move(target, old);
        Directory.Move(temporary, target);
        TryDelete(old);
    }

    private static void TryDelete(string directory)
    {
        try
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Left for the user; the output name itself is untouched.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private sealed record Written(string? Pretrained, IReadOnlyList<PoolTask> Tasks, IReadOnlyList<AlignedModel> Experts, IReadOnlyList<AlignedModel> Foundations);

    /// <summary>The two ways of aligning, writing into the temporary directory.</summary>
    private sealed class Writer(ExpertPool pool, string reference, PoolAlignmentOptions options, string temporary, string target,
        IProgress<PoolAlignmentProgress>? progress, CancellationToken cancellation) : IDisposable
    {
        public void Dispose() => _images?.Dispose();

        private readonly PermutationSpec _spec = VisionTransformerPermutations.Spec(pool.Config);
        private readonly string? _headFeatures = VisionTransformerPermutations.HeadFeatures(pool.Config);
        private readonly WeightMatchingOptions _matching = new() { Seed = options.Seed, MaxIterations = options.MaxIterations };

        private string SourcePath(string relative) => Path.Combine(pool.Directory, relative);

        /// <summary>Each expert matched to the reference expert; the base copied unchanged.</summary>
        public Written Local()
        {
            using var referenceExpert = ModelCheckpoints.LoadBackbone(SourcePath(pool.Manifest.Task(reference).Expert));
            var experts = new List<AlignedModel>();
            var tasks = new List<PoolTask>();
            for (int t = 0; t < pool.Tasks.Count; t++)
            {
                var task = pool.Tasks[t];
                cancellation.ThrowIfCancellationRequested();
                progress?.Report(new(task.Name == reference ? $"writing {task.Name}, the reference" : $"matching {task.Name} to {reference}", t, pool.Tasks.Count));
                using var expert = task.Name == reference ? null : ModelCheckpoints.LoadBackbone(SourcePath(task.Expert));
                var (permutation, measure) = expert is null
                    ? (PermutationSet.Identity(_spec), new AlignedModel(task.Name, 0, 0, 0, true))
                    : Match(task.Name, referenceExpert.Weights, expert.Weights);
                experts.Add(measure);
                tasks.Add(WriteTask(task, expert ?? referenceExpert, permutation, foundation: null));
            }

            string? pretrained = null;
            if (pool.Manifest.Pretrained is string source)
            {
                progress?.Report(new("copying the pre-trained base unchanged", pool.Tasks.Count, pool.Tasks.Count));
                pretrained = PoolManifest.PretrainedFileName;
                CopyCheckpoint(SourcePath(source), Path.Combine(temporary, pretrained));
            }

            return new(pretrained, tasks, experts, []);
        }

        /// <summary>Foundations matched to the reference task's; experts and heads moved with their foundation.</summary>
        public Written NonLocal()
        {
            string FoundationOf(PoolTask task) => Path.GetFullPath(SourcePath(task.Foundation ?? pool.Manifest.Pretrained
                ?? throw new InvalidDataException($"Task '{task.Name}' of the pool at {pool.Directory} names no foundation and the pool has no pre-trained base it could start from.")));
            var referenceTask = pool.Manifest.Task(reference);
            // The reference task's foundation first, then the others in task order.
            var foundations = pool.Tasks.OrderBy(t => t.Name == reference ? 0 : 1).Select(FoundationOf).Distinct(StringComparer.Ordinal).ToList();
            var stored = StoredNames(foundations);
            var permutations = new Dictionary<string, PermutationSet>(StringComparer.Ordinal);
            var measures = new List<AlignedModel>();
            int steps = foundations.Count + pool.Tasks.Count;
            Dictionary<string, Tensor>? sum = null;
            try
            {
                using var referenceFoundation = ModelCheckpoints.LoadBackbone(foundations[0]);
                for (int f = 0; f < foundations.Count; f++)
                {
                    cancellation.ThrowIfCancellationRequested();
                    string name = stored[foundations[f]];
                    progress?.Report(new($"matching foundation {name} to the foundation of {reference}", f, steps));
                    using var foundation = f == 0 ? null : ModelCheckpoints.LoadBackbone(foundations[f]);
                    var (permutation, measure) = foundation is null
                        ? (PermutationSet.Identity(_spec), new AlignedModel(name, 0, 0, 0, true))
                        : Match(name, referenceFoundation.Weights, foundation.Weights);
                    permutations[foundations[f]] = permutation;
                    measures.Add(measure);
                    var source = foundation ?? referenceFoundation;
                    var aligned = permutation.Apply(_spec, source.Weights);
                    try
                    {
                        Save(Path.Combine(FoundationsFolder, name), source, aligned);
                        using var scope = NewDisposeScope();
                        sum ??= aligned.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value, dtype: ScalarType.Float64).DetachFromDisposeScope(), StringComparer.Ordinal);
                        foreach (var (key, value) in aligned) sum[key].PlusInPlace(value.to(ScalarType.Float64));
                    }
                    finally
                    {
                        foreach (var t in aligned.Values) t.Dispose();
                    }
                }

                progress?.Report(new("averaging the aligned foundations into the pre-trained base", foundations.Count, steps));
                using (var scope = NewDisposeScope())
                {
                    var mean = sum!.ToDictionary(kv => kv.Key, kv => kv.Value.DividedBy(foundations.Count).to(ScalarType.Float32), StringComparer.Ordinal);
                    ModelCheckpoints.SaveBackbone(Path.Combine(temporary, PoolManifest.PretrainedFileName), pool.Config, mean,
                        new Dictionary<string, string> { [AlignedToMetadataKey] = $"mean of {foundations.Count} foundations aligned to {reference}'s" });
                }

                using var referenceExpert = ModelCheckpoints.LoadBackbone(SourcePath(referenceTask.Expert));
                var experts = new List<AlignedModel>();
                var tasks = new List<PoolTask>();
                for (int t = 0; t < pool.Tasks.Count; t++)
                {
                    var task = pool.Tasks[t];
                    cancellation.ThrowIfCancellationRequested();
                    progress?.Report(new($"moving {task.Name} with its foundation", foundations.Count + t, steps));
                    string foundation = FoundationOf(task);
                    var permutation = permutations[foundation];
                    var fromFoundation = measures[foundations.IndexOf(foundation)];
                    using var expert = task.Name == reference ? null : ModelCheckpoints.LoadBackbone(SourcePath(task.Expert));
                    var written = WriteTask(task, expert ?? referenceExpert, permutation, Path.Combine(FoundationsFolder, stored[foundation]).Replace('\\', '/'),
                        alignedWeights => experts.Add(new AlignedModel(task.Name, WeightDistance.L2(referenceExpert.Weights, (expert ?? referenceExpert).Weights),
                            WeightDistance.L2(referenceExpert.Weights, alignedWeights), fromFoundation.Iterations, fromFoundation.Converged)));
                    tasks.Add(written);
                }

                return new(PoolManifest.PretrainedFileName, tasks, experts, measures);
            }
            finally
            {
                if (sum is not null)
                {
                    foreach (var t in sum.Values) t.Dispose();
                }
            }
        }

        private Tensor? _images;

        /// <summary>Activation matching's images: <see cref="PoolAlignmentOptions.ImagesPerTask"/> training images of every task, loaded once.</summary>
        private Tensor Images()
        {
            if (_images is not null) return _images;
            var parts = new List<Tensor>();
            try
            {
                foreach (var task in pool.Tasks)
                {
                    progress?.Report(new($"loading training images of {task.Name}", 0, 1));
                    var train = pool.LoadData(task.Name).Train;
                    using var all = train.ToTensor();
                    using var generator = new TorchSharp.torch.Generator((ulong)options.Seed);
                    using var order = randperm(all.shape[0], generator: generator);
                    using var chosen = order.narrow(0, 0, Math.Min(options.ImagesPerTask, all.shape[0]));
                    parts.Add(all.index_select(0, chosen));
                }

                return _images = cat(parts.ToArray(), 0);
            }
            finally
            {
                foreach (var part in parts) part.Dispose();
            }
        }

        private (PermutationSet, AlignedModel) Match(string name, IReadOnlyDictionary<string, Tensor> reference, IReadOnlyDictionary<string, Tensor> other)
        {
            var result = options.Method == ActivationMethod
                ? new WeightMatchingResult(ActivationMatching.Match(pool.Config, reference, other, Images(), cancellation: cancellation), 1, true)
                : WeightMatching.Match(_spec, reference, other, _matching, cancellation);
            var aligned = result.Permutations.Apply(_spec, other);
            try
            {
                return (result.Permutations, new AlignedModel(name, WeightDistance.L2(reference, other), WeightDistance.L2(reference, aligned),
                    result.Iterations, result.Converged));
            }
            finally
            {
                foreach (var t in aligned.Values) t.Dispose();
            }
        }

        /// <summary>Writes the task's permuted expert and head; returns its manifest entry pointing at them.</summary>
        private PoolTask WriteTask(PoolTask task, LoadedBackbone expert, PermutationSet permutation, string? foundation,
            Action<IReadOnlyDictionary<string, Tensor>>? measure = null)
        {
            string expertFile = $"{ExpertsFolder}/{task.Name}.safetensors", headFile = $"{HeadsFolder}/{task.Name}.safetensors";
            var aligned = permutation.Apply(_spec, expert.Weights);
            try
            {
                measure?.Invoke(aligned);
                Save(expertFile, expert, aligned);
            }
            finally
            {
                foreach (var t in aligned.Values) t.Dispose();
            }

            using var head = permutation.Apply(pool.Head(task.Name), _headFeatures);
            Directory.CreateDirectory(Path.Combine(temporary, HeadsFolder));
            ModelCheckpoints.SaveHead(Path.Combine(temporary, headFile), head, new Dictionary<string, string> { [AlignedToMetadataKey] = reference }, task.Name);
            return task with { Expert = expertFile, Head = headFile, Foundation = foundation, Data = Relocated(task.Data) };
        }

        /// <summary>Saves permuted weights with the source checkpoint's metadata and the reference they were aligned to.</summary>
        private void Save(string relative, LoadedBackbone source, IReadOnlyDictionary<string, Tensor> weights)
        {
            string path = Path.Combine(temporary, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var metadata = new Dictionary<string, string>(source.Metadata, StringComparer.Ordinal) { [AlignedToMetadataKey] = reference };
            ModelCheckpoints.SaveBackbone(path, pool.Config, weights, metadata);
        }

        /// <summary>A file is copied byte for byte; a Hugging Face directory is read and written as one checkpoint.</summary>
        private static void CopyCheckpoint(string source, string destination)
        {
            if (File.Exists(source) && source.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                File.Copy(source, destination);
                return;
            }

            using var backbone = ModelCheckpoints.LoadBackbone(source);
            ModelCheckpoints.SaveBackbone(destination, backbone.Config, backbone.Weights, backbone.Metadata);
        }

        /// <summary>An image folder given relative to the source pool, made relative to the aligned pool (or kept absolute).</summary>
        private TaskDataSource? Relocated(TaskDataSource? data)
        {
            if (data is not { Kind: TaskDataSource.ImageFolderKind, Path: string path } || Path.IsPathRooted(path)) return data;
            string full = pool.ImageFolderPath(data);
            string relative = Path.GetRelativePath(target, full);
            return data with { Path = Path.IsPathRooted(relative) ? full : relative.Replace('\\', '/') };
        }

        /// <summary>A file name in <c>foundations/</c> for each foundation: its own name, numbered when two share one.</summary>
        private static Dictionary<string, string> StoredNames(IReadOnlyList<string> foundations)
        {
            var names = new Dictionary<string, string>(StringComparer.Ordinal);
            var used = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            foreach (string foundation in foundations)
            {
                string stem = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(foundation));
                string name = stem + ".safetensors";
                for (int k = 2; !used.Add(name); k++) name = $"{stem}-{k}.safetensors";
                names[foundation] = name;
            }

            return names;
        }
    }
}
