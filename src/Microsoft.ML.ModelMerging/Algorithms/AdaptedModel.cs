using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// The result of an <see cref="AdaptationJob"/> loaded for inference: a features function of images, to use with each
/// task's own head (e.g. <see cref="TaskAccuracy.Evaluate(ExpertPool, Func{Tensor, Tensor}, EvaluationSplit, Data.BenchmarkSources?)"/>).
/// AdaMerging, Fisher and RegMean give one merged backbone; WEMoE and E-WEMoE are rebuilt from the zoo's pre-trained
/// model and experts with the saved routers, and route every sample on its own.
/// </summary>
public sealed class AdaptedModel : IDisposable
{
    private readonly LoadedBackbone? _backbone;
    private readonly WeightEnsemblingMoE? _moe;
    private bool _disposed;

    private AdaptedModel(AdaptationManifest manifest, VisionTransformerConfig config, LoadedBackbone? backbone, WeightEnsemblingMoE? moe)
    {
        Manifest = manifest;
        Config = config;
        _backbone = backbone;
        _moe = moe;
    }

    public AdaptationManifest Manifest { get; }

    public VisionTransformerConfig Config { get; }

    /// <summary>The upscaled model of WEMoE / E-WEMoE; null for the methods that give one backbone.</summary>
    public WeightEnsemblingMoE? WeightEnsembling => ThrowIfDisposed(_moe);

    /// <summary>The merged backbone tensors of AdaMerging, Fisher and RegMean; null for WEMoE / E-WEMoE.</summary>
    public IReadOnlyDictionary<string, Tensor>? Weights => ThrowIfDisposed(_backbone)?.Weights;

    /// <summary>True when <paramref name="path"/> is a directory written by <see cref="AdaptationJob"/>.</summary>
    public static bool IsAdaptationDirectory(string path) => AdaptationManifest.Exists(path);

    /// <summary>
    /// Loads an adaptation directory. <paramref name="experts"/> must come from the zoo the run used (same recipe hash);
    /// WEMoE needs the experts of the run's tasks in the run's order, which are opened from the same zoo directory
    /// when <paramref name="experts"/> holds other tasks.
    /// </summary>
    /// <exception cref="InvalidOperationException">The run has not finished.</exception>
    /// <exception cref="InvalidDataException">The zoo, or the result files, do not match the run.</exception>
    public static AdaptedModel Load(string directory, ExpertPool experts)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(experts);
        var manifest = AdaptationManifest.Read(directory);
        if (manifest.PoolIdentity != experts.Manifest.Identity)
        {
            throw new InvalidDataException(
                $"{directory} was made from pool {manifest.PoolIdentity}; the pool at {experts.Directory} is {experts.Manifest.Identity}.");
        }

        if (manifest.Result is null)
        {
            string steps = File.Exists(Path.Combine(directory, AdaptationJob.CheckpointFileName))
                ? $" (checkpoint at step {AdaptationCheckpoint.ReadCompletedSteps(Path.Combine(directory, AdaptationJob.CheckpointFileName))})"
                : "";
            throw new InvalidOperationException($"The run in {directory} has not finished{steps}; run the same `mlmerge adapt` command again to complete it.");
        }

        // What the result is follows from the files the model saved, not from the method's name.
        if (!manifest.Result.Files.Contains(WeightEnsemblingOnnxExporter.RoutersFileName, StringComparer.Ordinal))
        {
            var backbone = ModelCheckpoints.LoadBackbone(Path.Combine(directory, DenseVitOnnxExporter.WeightsFileName));
            return new AdaptedModel(manifest, backbone.Config, backbone, null);
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
            return new AdaptedModel(manifest, set.Config, null, moe);
        }
        catch
        {
            moe.Dispose();
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

    /// <summary>Features [B, FeatureDim] of pixels in [0,1] ([B,C,H,W] or flattened).</summary>
    public Tensor Forward(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _moe is not null ? _moe.Forward(images) : VisionTransformer.Forward(Config, _backbone!.Weights, images);
    }

    private T ThrowIfDisposed<T>(T value)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return value;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _backbone?.Dispose();
        _moe?.Dispose();
    }
}
