using System.Diagnostics;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

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

/// <summary>
/// Runs one data-dependent method on a zoo (<see cref="ExpertPool"/>) into an output directory, resumably: WEMoE,
/// E-WEMoE and AdaMerging adapt on the unlabeled test images of every task (the test-time adaptation protocol);
/// Fisher merging and RegMean read labeled training examples. The directory holds <see cref="AdaptationManifest"/>
/// and the result; load it with <see cref="AdaptedModel.Load"/>.
/// </summary>
/// <remarks>
/// Layout: <c>adaptation.json</c>; <c>model.safetensors</c> (merged backbone with its config, for AdaMerging, Fisher
/// and RegMean); <c>routers.safetensors</c> (with the experts' task order, <see cref="WeightEnsemblingRouterFile.TaskMetadata"/>)
/// + <c>merged.safetensors</c> (the non-MLP task-arithmetic tensors) for WEMoE and E-WEMoE, which are rebuilt with the
/// zoo's pre-trained MLPs and experts; <c>checkpoint.safetensors</c> (adapted parameters and Adam state) and
/// <c>losses.csv</c> (step, cumulative seconds, learning rate, loss, per-task entropy) for test-time adaptation. Running again with the same settings continues from the checkpoint, or returns at once when
/// the result is complete; other settings are refused.
/// </remarks>
public static class AdaptationJob
{
    public const string CheckpointFileName = "checkpoint.safetensors";
    public const string ModelFileName = "model.safetensors";
    public const string RoutersFileName = "routers.safetensors";
    public const string MergedFileName = "merged.safetensors";
    public const string LossesFileName = "losses.csv";

    /// <summary>Metadata key naming the method in the result files.</summary>
    public const string MethodMetadataKey = "mlmerge.adaptation_method";

    /// <summary>Metadata key holding the pool identity in the result files.</summary>
    public const string PoolMetadataKey = "mlmerge.pool_identity";

    /// <param name="experts">The zoo (or some of its tasks); every task's data is loaded from <paramref name="sources"/>.</param>
    /// <param name="options">Method and settings.</param>
    /// <param name="outputDirectory">Created when missing; a directory of another run is refused.</param>
    /// <param name="sources">Where the benchmark data lives (default: <see cref="BenchmarkSources.Default"/>).</param>
    /// <param name="progress">Called synchronously.</param>
    /// <param name="cancellationToken">Checked before every step or example; a cancelled run keeps its last checkpoint.</param>
    /// <exception cref="InvalidOperationException">The directory holds a run with other settings.</exception>
    public static AdaptationJobResult Run(ExpertPool experts, AdaptationJobOptions options, string outputDirectory, BenchmarkSources? sources = null,
        IProgress<AdaptationJobProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(outputDirectory);
        options.Validate();
        var manifest = AdaptationManifest.For(experts, options);
        Directory.CreateDirectory(outputDirectory);
        if (AdaptationManifest.Exists(outputDirectory))
        {
            var existing = AdaptationManifest.Read(outputDirectory);
            if (!existing.IsSameRunAs(manifest))
            {
                throw new InvalidOperationException(
                    $"{outputDirectory} holds another run ({existing.Describe()}); this one is {manifest.Describe()}. Choose another output directory.");
            }

            if (existing.Result is { } done && done.Files.All(f => File.Exists(Path.Combine(outputDirectory, f))))
            {
                return new AdaptationJobResult(existing, done.CompletedSteps, AlreadyComplete: true);
            }
        }

        manifest.Write(outputDirectory);
        var (start, outcome) = options.Method.IsTestTimeAdaptation()
            ? Adapt(experts, options, outputDirectory, sources, progress, cancellationToken)
            : MergeWithData(experts, options, outputDirectory, sources, progress, cancellationToken);
        var finished = manifest with { Result = outcome };
        finished.Write(outputDirectory);
        return new AdaptationJobResult(finished, start, AlreadyComplete: false);
    }

    private static (int Start, AdaptationOutcome Outcome) Adapt(ExpertPool experts, AdaptationJobOptions options, string directory,
        BenchmarkSources? sources, IProgress<AdaptationJobProgress>? progress, CancellationToken cancellationToken)
    {
        string checkpoint = Path.Combine(directory, CheckpointFileName);
        bool resume = File.Exists(checkpoint);
        int start = resume ? AdaptationCheckpoint.ReadCompletedSteps(checkpoint) : 0;
        var tasks = new List<AdaptationTask>();
        try
        {
            for (int t = 0; t < experts.Tasks.Count; t++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                string name = experts.Tasks[t].Name;
                progress?.Report(new AdaptationJobProgress($"loading the test images of {name}", t, experts.Tasks.Count, null));
                tasks.Add(new AdaptationTask(name, experts.LoadData(name, sources).Test.ToTensor(), experts.Head(name)));
            }

            var tta = options.ToTestTimeAdaptationOptions() with
            {
                CheckpointPath = checkpoint,
                CheckpointEvery = options.CheckpointEvery,
                ResumeFrom = resume ? checkpoint : null,
            };
            var metadata = ResultMetadata(experts, options);
            if (options.Method.IsWeightEnsembling())
            {
                using var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, options.ToWeightEnsemblingOptions());
                var outcome = Train(moe, tasks, tta, directory, start, progress, cancellationToken);
                // Output i of a router weighs expert i: record the order so export and eval never assume it.
                var routerMetadata = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
                foreach (var (key, value) in WeightEnsemblingRouterFile.TaskMetadata(experts.TaskNames))
                {
                    routerMetadata[key] = value;
                }

                moe.SaveRouters(Path.Combine(directory, RoutersFileName), routerMetadata);
                metadata[VisionTransformerConfig.MetadataKey] = experts.Config.ToJson();
                using (var scope = NewDisposeScope())
                {
                    SafeTensorsWriter.Save(Path.Combine(directory, MergedFileName),
                        moe.MergedWeights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal), metadata);
                }

                return (start, outcome with { Files = [RoutersFileName, MergedFileName, CheckpointFileName, LossesFileName] });
            }
            else
            {
                var granularity = options.Method == AdaptationMethod.AdaMergingTaskWise ? AdaMergingGranularity.TaskWise : AdaMergingGranularity.LayerWise;
                using var ada = AdaMerging.Create(experts.Config, experts.Pretrained, experts.Experts,
                    new AdaMergingOptions { Granularity = granularity, InitialLambda = options.Lambda });
                var outcome = Train(ada, tasks, tta, directory, start, progress, cancellationToken);
                var merged = ada.MergedWeights();
                try
                {
                    ModelCheckpoints.SaveBackbone(Path.Combine(directory, ModelFileName), experts.Config, merged, metadata);
                }
                finally
                {
                    foreach (var tensor in merged.Values)
                    {
                        tensor.Dispose();
                    }
                }

                return (start, outcome with { Files = [ModelFileName, CheckpointFileName, LossesFileName] });
            }
        }
        finally
        {
            foreach (var task in tasks)
            {
                task.Images.Dispose();
            }
        }
    }

    private static AdaptationOutcome Train(IAdaptableModel model, IReadOnlyList<AdaptationTask> tasks, TestTimeAdaptationOptions tta, string directory,
        int start, IProgress<AdaptationJobProgress>? progress, CancellationToken cancellationToken)
    {
        using var log = new AdaptationLossLog(Path.Combine(directory, LossesFileName), [.. tasks.Select(t => t.Name)], start);
        var clock = Stopwatch.StartNew();
        TestTimeAdaptation.Run(model, tasks, tta, new SynchronousProgress<AdaptationProgress>(p =>
        {
            log.Append(p, log.PreviousSeconds + clock.Elapsed.TotalSeconds);
            progress?.Report(new AdaptationJobProgress("adapting", p.Step, p.TotalSteps, p.Loss));
        }), cancellationToken);
        return new AdaptationOutcome
        {
            CompletedSteps = tta.Steps,
            FinalLoss = log.LastLoss,
            Seconds = log.PreviousSeconds + clock.Elapsed.TotalSeconds,
            Files = [],
        };
    }

    private static (int Start, AdaptationOutcome Outcome) MergeWithData(ExpertPool experts, AdaptationJobOptions options, string directory,
        BenchmarkSources? sources, IProgress<AdaptationJobProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var examples = new List<ExpertExamples>();
        try
        {
            for (int t = 0; t < experts.Tasks.Count; t++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                string name = experts.Tasks[t].Name;
                progress?.Report(new AdaptationJobProgress($"loading the training examples of {name}", t, experts.Tasks.Count, null));
                var train = ExpertExamples.Sample(experts.LoadData(name, sources).Train, options.ExamplesPerTask, options.Seed);
                examples.Add(new ExpertExamples(name, experts.Expert(name), train.ToTensor()) { Head = experts.Head(name), Labels = train.LabelsToTensor() });
            }

            string verb = options.Method == AdaptationMethod.Fisher ? "Fisher of" : "Gram matrices of";
            var dataProgress = new SynchronousProgress<DataMergeProgress>(p =>
                progress?.Report(new AdaptationJobProgress($"{verb} {p.Task} ({p.TaskIndex + 1}/{p.TaskCount})", p.Done, p.Total, null)));
            var merged = options.Method == AdaptationMethod.Fisher
                ? FisherMerge.Merge(experts.Config, examples, new FisherMergeOptions(), dataProgress, cancellationToken)
                : RegMeanMerge.Merge(experts.Config, examples, new RegMeanMergeOptions(), dataProgress, cancellationToken);
            try
            {
                ModelCheckpoints.SaveBackbone(Path.Combine(directory, ModelFileName), experts.Config, merged, ResultMetadata(experts, options));
            }
            finally
            {
                foreach (var tensor in merged.Values)
                {
                    tensor.Dispose();
                }
            }

            return (0, new AdaptationOutcome { CompletedSteps = 0, Seconds = clock.Elapsed.TotalSeconds, Files = [ModelFileName] });
        }
        finally
        {
            foreach (var example in examples)
            {
                example.Images.Dispose();
                example.Labels?.Dispose();
            }
        }
    }

    private static Dictionary<string, string> ResultMetadata(ExpertPool experts, AdaptationJobOptions options) => new(StringComparer.Ordinal)
    {
        [MethodMetadataKey] = options.Method.Name(),
        [PoolMetadataKey] = experts.Manifest.Identity,
    };
}
