using System.Diagnostics;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>Reported while an <see cref="AdaptationJob"/> runs.</summary>
/// <param name="Stage">What is being done, e.g. <c>adapting</c> or <c>Fisher of mnist (1/7)</c>.</param>
/// <param name="Done">Units of the stage done (steps, examples).</param>
/// <param name="Total">Units of the stage.</param>
/// <param name="Loss">The loss of the step just done (test-time adaptation only).</param>
public sealed record AdaptationJobProgress(string Stage, long Done, long Total, double? Loss);

/// <summary>What <see cref="AdaptationJob.Run"/> did.</summary>
/// <param name="Manifest">The finished manifest (with its <see cref="AdaptationManifest.Result"/>).</param>
/// <param name="StartStep">Steps already done when this call started (a resumed run continues from there).</param>
/// <param name="AlreadyComplete">True when the directory already held the finished result and nothing ran.</param>
public sealed record AdaptationJobResult(AdaptationManifest Manifest, int StartStep, bool AlreadyComplete);

/// <summary>How an <see cref="AdaptationJob"/> checkpoints (not part of the run's identity).</summary>
public sealed record AdaptationJobCheckpoints
{
    /// <summary>Write a resumable checkpoint every this many steps (and after the last); 0 = only after the last [100].</summary>
    public int Every { get; init; } = 100;

    /// <summary>Also write one when this much time has passed since the last [30 s]; null = by steps only.</summary>
    public TimeSpan? Interval { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// <c>mlmerge adapt</c>: runs one data-dependent algorithm of the registry (test-time adaptation: WEMoE, E-WEMoE,
/// AdaMerging; labeled data: Fisher, RegMean) on a pool into an output directory, resumably. The directory holds
/// <see cref="AdaptationManifest"/> and the result as the model saves itself (<see cref="DenseVitOnnxExporter.SaveWeights"/>:
/// a merged backbone, or WEMoE's routers and merged non-MLP tensors); load it with <see cref="AdaptedModel.Load"/>.
/// </summary>
/// <remarks>
/// Test-time adaptation also leaves <c>checkpoint.safetensors</c> (adapted parameters and Adam state) and <c>losses.csv</c>
/// (step, cumulative seconds, learning rate, loss, per-task entropy). Running again with the same settings continues from
/// the checkpoint, or returns at once when the result is complete; other settings are refused.
/// </remarks>
public static class AdaptationJob
{
    /// <summary>File name of the resumable checkpoint of a test-time adaptation (adapted parameters and Adam state).</summary>
    public const string CheckpointFileName = "checkpoint.safetensors";
    /// <summary>File name of the per-step log: step, cumulative seconds, learning rate, loss, per-task entropy.</summary>
    public const string LossesFileName = "losses.csv";

    /// <summary>Metadata key naming the method in the result files.</summary>
    public const string MethodMetadataKey = "mlmerge.adaptation_method";

    /// <summary>Metadata key holding the pool identity in the result files.</summary>
    public const string PoolMetadataKey = "mlmerge.pool_identity";

    /// <summary>
    /// True for gradient-based test-time adaptation (a <c>steps</c> parameter): it checkpoints and logs losses. TACT reads
    /// unlabeled images too, but in one pass.
    /// </summary>
    public static bool RunsInSteps(IMergeAlgorithm algorithm)
    {
        ArgumentNullException.ThrowIfNull(algorithm);
        return algorithm.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages) && algorithm.Parameters.Any(p => p.Name == "steps");
    }

    /// <param name="pool">The pool (or some of its tasks); every task's data is loaded from <paramref name="sources"/>.</param>
    /// <param name="method">A registered algorithm that needs data (<see cref="AlgorithmNeeds.UnlabeledImages"/> or <see cref="AlgorithmNeeds.LabeledData"/>).</param>
    /// <param name="parameters">Its parameters; absent ones take their defaults.</param>
    /// <param name="outputDirectory">Created when missing; a directory of another run is refused.</param>
    /// <param name="checkpoints">How often test-time adaptation checkpoints (default: every 100 steps and every 30 s).</param>
    /// <param name="sources">Where the benchmark data lives (default: <see cref="BenchmarkSources.Default"/>).</param>
    /// <param name="progress">Called synchronously.</param>
    /// <param name="cancellationToken">Checked before every step or example; a cancelled run keeps its last checkpoint.</param>
    /// <param name="registry">Where to find <paramref name="method"/> (default: <see cref="MergeAlgorithmRegistry.Default"/>).</param>
    /// <exception cref="ArgumentException">Unknown method or parameter, or a method that needs no data (use <c>merge</c>).</exception>
    /// <exception cref="InvalidOperationException">The directory holds a run with other settings.</exception>
    public static AdaptationJobResult Run(ExpertPool pool, string method, MergeParameters parameters, string outputDirectory,
        AdaptationJobCheckpoints? checkpoints = null, BenchmarkSources? sources = null, IProgress<AdaptationJobProgress>? progress = null,
        CancellationToken cancellationToken = default, MergeAlgorithmRegistry? registry = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(outputDirectory);
        var algorithm = (registry ?? MergeAlgorithmRegistry.Default).Get(method);
        if ((algorithm.Needs & (AlgorithmNeeds.UnlabeledImages | AlgorithmNeeds.LabeledData)) == 0)
        {
            throw new ArgumentException($"{algorithm.Name} needs no data: merge with `mlmerge merge --method {algorithm.Name}` (or MergeExperts).");
        }

        // Everything that can be refused is refused before the directory is written: a manifest of a run that cannot run
        // would make the corrected command "another run" in the same directory.
        algorithm.Check(pool, parameters);
        checkpoints ??= new AdaptationJobCheckpoints();
        bool adapts = RunsInSteps(algorithm);
        var manifest = AdaptationManifest.For(pool, algorithm, parameters, adapts ? checkpoints.Every : 0);
        // A result is saved as model.safetensors and the like: a directory holding an input (a Hugging Face expert's
        // folder, the pool itself) would have it overwritten.
        Checkpoints.OutputOverlap.EnsureDistinct(outputDirectory, pool.InputFiles(), directOnly: true);
        bool createdDirectory = !Directory.Exists(outputDirectory);
        Directory.CreateDirectory(outputDirectory);
        bool resuming = AdaptationManifest.Exists(outputDirectory);
        if (resuming)
        {
            var existing = AdaptationManifest.Read(outputDirectory);
            if (!existing.IsSameRunAs(manifest))
            {
                var changed = existing.ChangedInputs(manifest.Inputs);
                bool sameCommand = (existing with { Inputs = null }).IsSameRunAs(manifest with { Inputs = null });
                throw new InvalidOperationException(changed.Count > 0 && sameCommand
                    ? $"{outputDirectory} holds a run of the same command on other files ({string.Join(", ", changed)} differ from the pool's at {pool.Directory} now). Choose another output directory, or delete this one to run again."
                    : $"{outputDirectory} holds another run: {existing.DifferencesFrom(manifest)}. Choose another output directory.");
            }

            if (existing.Result is { } done && done.Files.All(f => File.Exists(Path.Combine(outputDirectory, f))))
            {
                return new AdaptationJobResult(existing, done.CompletedSteps, AlreadyComplete: true);
            }
        }

        try
        {
            return RunInDirectory(pool, algorithm, parameters, manifest, adapts, outputDirectory, checkpoints, sources, progress, cancellationToken);
        }
        catch when (!resuming)
        {
            RemoveUnfinished(outputDirectory, createdDirectory);
            throw;
        }
    }

    /// <summary>
    /// After a first run failed or was cancelled: removes what it wrote unless a checkpoint is there to resume from, so
    /// the directory does not claim a run that holds nothing (and the corrected command is not "another run" there).
    /// </summary>
    private static void RemoveUnfinished(string outputDirectory, bool createdDirectory)
    {
        if (File.Exists(Path.Combine(outputDirectory, CheckpointFileName))) return;
        foreach (string name in new[] { AdaptationManifest.FileName, LossesFileName })
        {
            string path = Path.Combine(outputDirectory, name);
            if (File.Exists(path)) File.Delete(path);
        }

        if (createdDirectory && !Directory.EnumerateFileSystemEntries(outputDirectory).Any()) Directory.Delete(outputDirectory);
    }

    private static AdaptationJobResult RunInDirectory(ExpertPool pool, IMergeAlgorithm algorithm, MergeParameters parameters, AdaptationManifest manifest,
        bool adapts, string outputDirectory, AdaptationJobCheckpoints checkpoints, BenchmarkSources? sources, IProgress<AdaptationJobProgress>? progress,
        CancellationToken cancellationToken)
    {
        manifest.Write(outputDirectory);
        string checkpoint = Path.Combine(outputDirectory, CheckpointFileName);
        int start = adapts && File.Exists(checkpoint) ? AdaptationCheckpoint.ReadCompletedSteps(checkpoint) : 0;
        var clock = Stopwatch.StartNew();
        using var log = adapts ? new AdaptationLossLog(Path.Combine(outputDirectory, LossesFileName), pool.TaskNames, start) : null;
        var context = new AlgorithmContext
        {
            Sources = sources,
            Cancellation = cancellationToken,
            Checkpointing = adapts ? new AdaptationCheckpointing(checkpoint, checkpoints.Every, Resume: true, checkpoints.Interval) : null,
            Progress = new SynchronousProgress<AlgorithmProgress>(p =>
            {
                if (p.Step is { } step) log?.Append(step, log.PreviousSeconds + clock.Elapsed.TotalSeconds);
                progress?.Report(new AdaptationJobProgress(p.Stage, p.Done, p.Total, p.Loss));
            }),
        };
        using var model = algorithm.Run(pool, parameters, context);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [MethodMetadataKey] = algorithm.Name,
            [PoolMetadataKey] = pool.Manifest.Identity,
        };
        if (model.Parts.Count != 1 && model.Parts.Any(p => p.Exporter.GetType() == typeof(DenseVitOnnxExporter)))
        {
            throw new InvalidOperationException($"{algorithm.Name} returned one plain model per task; an adaptation directory holds them only when each saves under its own names.");
        }

        // A result with one model per task (TACT) saves every part; parts that share a file write the same bytes to it.
        var files = model.Parts.SelectMany(part => part.Exporter.SaveWeights(outputDirectory, metadata)).Distinct(StringComparer.Ordinal).ToList();
        if (adapts) files.AddRange([CheckpointFileName, LossesFileName]);
        var outcome = new AdaptationOutcome
        {
            CompletedSteps = adapts && algorithm.Parameters.Any(p => p.Name == "steps")
                ? (int)parameters.Resolve(algorithm.Name, algorithm.Parameters).GetInteger("steps")
                : 0,
            FinalLoss = log?.LastLoss,
            Seconds = (log?.PreviousSeconds ?? 0) + clock.Elapsed.TotalSeconds,
            Files = files,
        };
        var finished = manifest with { Result = outcome };
        finished.Write(outputDirectory);
        return new AdaptationJobResult(finished, start, AlreadyComplete: false);
    }
}
