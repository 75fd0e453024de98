using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>A backbone read from disk: its config and its tensors by name (float32, CPU). Dispose frees the tensors.</summary>
public sealed class LoadedBackbone : IDisposable
{
    /// <summary>Wraps a loaded backbone, taking ownership of <paramref name="weights"/>.</summary>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="weights">Its tensors by name, float32 on the CPU.</param>
    /// <param name="metadata">The checkpoint's metadata.</param>
    /// <param name="source">Where it was read from (for messages).</param>
    public LoadedBackbone(VisionTransformerConfig config, Dictionary<string, Tensor> weights, IReadOnlyDictionary<string, string> metadata, string source)
    {
        Config = config;
        Weights = weights;
        Metadata = metadata;
        Source = source;
    }

    /// <summary>The backbone's configuration, from the checkpoint's metadata or its Hugging Face <c>config.json</c>.</summary>
    public VisionTransformerConfig Config { get; }
    /// <summary>The tensors by name, float32 on the CPU; owned by this object.</summary>
    public Dictionary<string, Tensor> Weights { get; }
    /// <summary>The checkpoint's <c>__metadata__</c>.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>The path it was read from.</summary>
    public string Source { get; }

    /// <summary>Disposes every tensor in <see cref="Weights"/>.</summary>
    public void Dispose()
    {
        foreach (var t in Weights.Values) t.Dispose();
    }
}

/// <summary>
/// Saving and loading vision transformers and heads as safetensors. Our checkpoints carry their config in the metadata
/// (<see cref="VisionTransformerConfig.MetadataKey"/>), so a checkpoint is self-describing; a Hugging Face CLIP checkpoint is
/// described by the <c>config.json</c> (and optional <c>preprocessor_config.json</c>) next to it.
/// </summary>
public static class ModelCheckpoints
{
    /// <summary>Writes the backbone's tensors with its config (and any extra metadata) to a .safetensors file, atomically.</summary>
    public static void SaveBackbone(string path, VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var all = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [VisionTransformerConfig.MetadataKey] = config.ToJson(),
        };
        using var scope = NewDisposeScope();
        var cpu = weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal);
        SafeTensorsWriter.Save(path, cpu, all);
    }

    internal static void SaveBackbone(string path, VisionTransformer model, IReadOnlyDictionary<string, string>? metadata = null) =>
        SaveBackbone(path, model.Config, model.Weights, metadata);

    /// <summary>Reads the config of a checkpoint without loading its tensors.</summary>
    public static VisionTransformerConfig ReadConfig(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        return ConfigOf(checkpoint);
    }

    /// <summary>Loads a backbone checkpoint (ours, or a Hugging Face CLIP vision checkpoint with its config.json beside it).</summary>
    public static LoadedBackbone LoadBackbone(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        var config = ConfigOf(checkpoint);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var entry in checkpoint.Tensors)
            {
                if (VisionTransformerNames.IsIgnoredWhenLoading(entry.Name) || !entry.DType.IsFloatingPoint()) continue;
                // The caller owns what is loaded (through Dispose), not whatever dispose scope happens to be active.
                weights[entry.Name] = checkpoint.ReadTensor(entry.Name).DetachFromDisposeScope();
                EnsureFinite(entry, weights[entry.Name]);
            }
            var report = StateLoadReport.Compare(config, weights.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.shape)));
            report.ThrowIfIncomplete(checkpoint.Source);
            foreach (var ignored in report.Ignored)
            {
                weights[ignored].Dispose();
                weights.Remove(ignored);
            }
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            throw;
        }
        return new LoadedBackbone(config, weights, checkpoint.Metadata, checkpoint.Source);
    }

    private static VisionTransformerConfig ConfigOf(Checkpoint checkpoint)
    {
        if (checkpoint.Metadata.TryGetValue(VisionTransformerConfig.MetadataKey, out var json))
            return VisionTransformerConfig.FromJson(json);
        string directory = Directory.Exists(checkpoint.Source) ? checkpoint.Source : Path.GetDirectoryName(Path.GetFullPath(checkpoint.Source))!;
        string hfConfig = Path.Combine(directory, "config.json");
        if (File.Exists(hfConfig))
        {
            string preprocessor = Path.Combine(directory, "preprocessor_config.json");
            return VisionTransformerConfig.FromHuggingFaceConfig(File.ReadAllText(hfConfig),
                preprocessorConfigJson: File.Exists(preprocessor) ? File.ReadAllText(preprocessor) : null);
        }
        // PEFT's adapter_config.json beside it (named here: models do not depend on the adapter code).
        if (File.Exists(Path.Combine(directory, "adapter_config.json")))
            throw new CheckpointFormatException(checkpoint.Source, null,
                $"this is a LoRA adapter's weights (PEFT folder {directory}), not a model: give the folder itself where an expert or model may be an adapter " +
                "(`merge --expert`, `pool add --expert`, `eval --model` or `export-onnx --model` with the pool whose base it adapts).");
        throw new CheckpointFormatException(checkpoint.Source, null,
            $"no model config: neither metadata '{VisionTransformerConfig.MetadataKey}' nor a config.json next to the checkpoint.");
    }

    /// <summary>Metadata key of the task a head classifies for (written by <see cref="SaveHead"/> when the task is known).</summary>
    public const string HeadTaskMetadataKey = "mlmerge.task";

    /// <summary>Writes a head with its kind and class names, and the task it belongs to when <paramref name="task"/> is given.</summary>
    public static void SaveHead(string path, ClassificationHead head, IReadOnlyDictionary<string, string>? metadata = null, string? task = null)
    {
        var all = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (k, v) in head.ToMetadata()) all[k] = v;
        if (task is not null) all[HeadTaskMetadataKey] = task;
        using var scope = NewDisposeScope();
        var cpu = head.ToTensors().ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal);
        SafeTensorsWriter.Save(path, cpu, all);
    }

    /// <summary>
    /// Loads a head. With <paramref name="expectedTask"/>, a head recorded for another task is refused (heads saved
    /// without a task pass); with <paramref name="expectedClassNames"/>, a head whose classes differ is refused, so a
    /// swapped or wrong head fails here instead of scoring nonsense.
    /// </summary>
    public static ClassificationHead LoadHead(string path, string? expectedTask = null, IReadOnlyList<string>? expectedClassNames = null)
    {
        using var checkpoint = Checkpoint.Open(path);
        if (expectedTask is not null && checkpoint.Metadata.TryGetValue(HeadTaskMetadataKey, out var recorded) &&
            !string.Equals(recorded, expectedTask, StringComparison.Ordinal))
            throw new CheckpointFormatException(checkpoint.Source, null, $"this head was trained for task '{recorded}', not '{expectedTask}'.");
        var tensors = checkpoint.ReadAll();
        try
        {
            foreach (var (name, tensor) in tensors) EnsureFinite(checkpoint.GetEntry(name), tensor);
            var head = ClassificationHead.FromTensors(tensors, checkpoint.Metadata);
            foreach (var parameter in head.Parameters) parameter.DetachFromDisposeScope();
            if (expectedClassNames is not null && !head.ClassNames.SequenceEqual(expectedClassNames, StringComparer.Ordinal))
            {
                head.Dispose();
                throw new CheckpointFormatException(checkpoint.Source, null,
                    $"head has {head.ClassCount} classes [{string.Join(", ", head.ClassNames)}] but task '{expectedTask ?? "?"}' has " +
                    $"{expectedClassNames.Count} [{string.Join(", ", expectedClassNames)}].");
            }
            return head;
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Weights holding NaN or ±∞ give meaningless outputs (an evaluation reports chance accuracy without a word): refuse
    /// them where they are loaded, naming the file and the tensor.
    /// </summary>
    private static void EnsureFinite(TensorEntry entry, Tensor tensor)
    {
        if (!tensor.is_floating_point()) return;
        using var scope = NewDisposeScope();
        var finite = isfinite(tensor);
        if (finite.all().item<bool>()) return;
        long bad = (~finite).sum().item<long>();
        long first = (~finite).flatten().nonzero()[0, 0].item<long>();
        throw new CheckpointFormatException(entry.File, entry.Name,
            $"holds {bad} non-finite value(s) (NaN or ±∞; first at entry {first}): the model cannot be used.");
    }
}
