using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// Loads the result of an <see cref="AdaptationJob"/> as the <see cref="MultiTaskModel"/> every other consumer takes
/// (evaluation, export, comparison): AdaMerging, Fisher and RegMean saved one merged backbone; WEMoE and E-WEMoE are rebuilt
/// from the pool's pre-trained model and experts with the saved routers, and route every sample on its own. What the
/// result is follows from the files the model saved, never from the method's name.
/// </summary>
public static class AdaptedModel
{
    /// <summary>True when <paramref name="path"/> is a directory written by <see cref="AdaptationJob"/>.</summary>
    public static bool IsAdaptationDirectory(string path) => AdaptationManifest.Exists(path);

    /// <summary>
    /// The tasks a result serves when none are asked for: the run's tasks for a TACT result (it has a model for each task it
    /// corrected, and none for the pool's other tasks); null for a result that scores any task of its pool with the task's head.
    /// </summary>
    public static IReadOnlyList<string>? DefaultTasks(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var manifest = AdaptationManifest.Read(directory);
        return manifest.Result?.Files.Any(CorrectedVitOnnxExporter.IsCorrectionFile) == true ? manifest.Tasks : null;
    }

    /// <summary>
    /// Loads an adaptation directory with the heads of <paramref name="experts"/>' tasks. <paramref name="experts"/> must
    /// come from the pool the run used (same identity); WEMoE needs the experts of the run's tasks in the run's order, which
    /// are opened from the same pool directory when <paramref name="experts"/> holds other tasks.
    /// </summary>
    /// <exception cref="InvalidOperationException">The run has not finished.</exception>
    /// <exception cref="InvalidDataException">The pool, or the result files, do not match the run.</exception>
    public static MultiTaskModel Load(string directory, ExpertPool experts)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(experts);
        var manifest = AdaptationManifest.Read(directory);
        if (manifest.PoolIdentity != experts.Manifest.Identity)
        {
            throw new InvalidDataException(
                $"{directory} was made from pool {manifest.PoolIdentity}; the pool at {experts.Directory} is {experts.Manifest.Identity}.");
        }

        // The run's tasks that the pool still has are compared (a dense result is paired with whatever heads it is given).
        var present = manifest.Tasks.Where(t => experts.Manifest.Tasks.Any(p => p.Name == t)).ToList();
        if (manifest.ChangedInputs(experts.InputFingerprints(present), present) is { Count: > 0 } changed)
        {
            throw new InvalidDataException(
                $"{directory} was made from other files than the pool at {experts.Directory} holds now: {string.Join(", ", changed)} " +
                "changed since (a result copied from another pool, or an expert or head replaced). Run `mlmerge adapt` again for this pool.");
        }

        if (manifest.Result is null)
        {
            string steps = File.Exists(Path.Combine(directory, AdaptationJob.CheckpointFileName))
                ? $" (checkpoint at step {AdaptationCheckpoint.ReadCompletedSteps(Path.Combine(directory, AdaptationJob.CheckpointFileName))})"
                : "";
            throw new InvalidOperationException($"The run in {directory} has not finished{steps}; run the same `mlmerge adapt` command again to complete it.");
        }

        // What the result is follows from the files the model saved, not from the method's name.
        var heads = experts.TaskNames.Select(t => new OnnxTaskHead(t, experts.Head(t))).ToArray();
        if (manifest.Result.Files.Any(CorrectedVitOnnxExporter.IsCorrectionFile))
        {
            return LoadCorrected(directory, manifest, experts, heads);
        }

        if (!manifest.Result.Files.Contains(WeightEnsemblingOnnxExporter.RoutersFileName, StringComparer.Ordinal))
        {
            var backbone = ModelCheckpoints.LoadBackbone(Path.Combine(directory, DenseVitOnnxExporter.WeightsFileName));
            try
            {
                return new MultiTaskModel([new MultiTaskModelPart(new DenseVitOnnxExporter(backbone.Config, backbone.Weights, heads))], [backbone]);
            }
            catch
            {
                backbone.Dispose();
                throw;
            }
        }

        bool sameTasks = experts.TaskNames.SequenceEqual(manifest.Tasks, StringComparer.Ordinal);
        using var own = sameTasks ? null : ExpertPool.Load(experts.Directory, manifest.Tasks);
        var set = own ?? experts;
        var routers = WeightEnsemblingRouterFile.Open(Path.Combine(directory, WeightEnsemblingOnnxExporter.RoutersFileName));
        if (routers.Tasks is { } recorded && !recorded.SequenceEqual(manifest.Tasks, StringComparer.Ordinal))
        {
            throw new InvalidDataException(
                $"{routers.Path} weighs the experts of tasks [{string.Join(", ", recorded)}] in this order; the run's manifest lists [{string.Join(", ", manifest.Tasks)}].");
        }

        // Checks the zoo's config and the experts' order against the routers before loading them.
        var moe = routers.CreateModel(set);
        try
        {
            CheckMergedWeights(Path.Combine(directory, WeightEnsemblingOnnxExporter.MergedFileName), moe, set.Directory);
            var metadata = WeightEnsemblingRouterFile.TaskMetadata(manifest.Tasks);
            return new MultiTaskModel([new MultiTaskModelPart(new WeightEnsemblingOnnxExporter(moe, heads, new VitOnnxExportOptions { Metadata = metadata }))], [moe]);
        }
        catch
        {
            moe.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A TACT result: per task a correction and the backbone it corrects (one shared file, or the task's own), each task
    /// served by its own part. Tasks of <paramref name="heads"/> the run did not correct are refused by name.
    /// </summary>
    private static MultiTaskModel LoadCorrected(string directory, AdaptationManifest manifest, ExpertPool experts, IReadOnlyList<OnnxTaskHead> heads)
    {
        var uncorrected = heads.Where(h => !manifest.Result!.Files.Contains(CorrectedVitOnnxExporter.CorrectionFileName(h.Task), StringComparer.Ordinal)).ToList();
        if (uncorrected.Count > 0)
        {
            throw new InvalidDataException(
                $"{directory} holds TACT corrections for {string.Join(", ", manifest.Tasks)}; none for {string.Join(", ", uncorrected.Select(h => h.Task))}.");
        }

        var owned = new List<IDisposable>();
        try
        {
            var backbones = new Dictionary<string, LoadedBackbone>(StringComparer.Ordinal);
            var parts = new List<MultiTaskModelPart>();
            foreach (var head in heads)
            {
                string path = Path.Combine(directory, CorrectedVitOnnxExporter.CorrectionFileName(head.Task));
                string backboneFile;
                using (var checkpoint = Checkpoint.Open(path))
                {
                    backboneFile = checkpoint.Metadata.TryGetValue(CorrectedVitOnnxExporter.BackboneMetadataKey, out var named)
                        ? named
                        : throw new InvalidDataException($"{path} does not name the backbone it corrects ({CorrectedVitOnnxExporter.BackboneMetadataKey}).");
                }

                if (!backbones.TryGetValue(backboneFile, out var backbone))
                {
                    backbone = ModelCheckpoints.LoadBackbone(Path.Combine(directory, backboneFile));
                    owned.Add(backbone);
                    backbones[backboneFile] = backbone;
                }

                var correction = ActivationCorrection.Load(path, backbone.Config);
                owned.Add(correction);
                parts.Add(new MultiTaskModelPart(new CorrectedVitOnnxExporter(backbone.Config, backbone.Weights, head, correction, backboneFile)));
            }

            return new MultiTaskModel(parts, owned);
        }
        catch
        {
            foreach (var disposable in owned) disposable.Dispose();
            throw;
        }
    }

    /// <summary>The non-MLP tensors rebuilt from the zoo must be the ones the routers were trained with.</summary>
    private static void CheckMergedWeights(string path, WeightEnsemblingMoE moe, string zoo)
    {
        using var checkpoint = Checkpoint.Open(path);
        using var scope = NewDisposeScope();
        var saved = checkpoint.Tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        if (!saved.SetEquals(moe.MergedWeights.Keys))
        {
            throw new InvalidDataException($"{path} does not hold the merged non-MLP tensors of this model.");
        }

        foreach (var (name, rebuilt) in moe.MergedWeights)
        {
            Tensor value = checkpoint.ReadTensor(name);
            if (!value.shape.SequenceEqual(rebuilt.shape) || value.to(rebuilt.dtype).sub(rebuilt.cpu()).abs().max().item<float>() > 1e-6f)
            {
                throw new InvalidDataException(
                    $"'{name}' rebuilt from the zoo at {zoo} differs from the one the routers were trained with ({path}): the zoo's checkpoints changed.");
            }
        }
    }
}
