using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>A task head stored in a checkpoint file: the task name and the head's <c>.safetensors</c> path.</summary>
public sealed record HeadCheckpoint(string Task, string Path)
{
    /// <summary>Parses <c>task=path</c> (the first <c>=</c> separates; the path may contain more).</summary>
    public static HeadCheckpoint Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        int equals = spec.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0 || equals == spec.Length - 1)
        {
            throw new ArgumentException($"Head '{spec}' must be given as <task>=<head.safetensors>.");
        }

        return new HeadCheckpoint(spec[..equals].Trim(), spec[(equals + 1)..].Trim());
    }
}

/// <summary>What <see cref="VitOnnxExport.Save"/> wrote.</summary>
public sealed record VitOnnxExportResult(string OutputPath, long Bytes, long InitializerBytes, int Nodes, IReadOnlyList<string> Tasks);

/// <summary>Checkpoint-to-ONNX export of a dense Vision Transformer (what <c>mlmerge export-onnx</c> runs).</summary>
public static class VitOnnxExport
{
    /// <summary>Provenance keys copied from the backbone checkpoint's metadata into the model's (merge method, parameters, inputs).</summary>
    public const string CarriedMetadataPrefix = "mlmerge.merge_";

    /// <summary>
    /// Loads a backbone checkpoint (ours, or Hugging Face CLIP with its config.json) and one head checkpoint per task,
    /// and writes the ONNX model to <paramref name="outputPath"/> through a temporary file renamed into place.
    /// The backbone's <c>mlmerge.merge_*</c> metadata is carried into the model's metadata.
    /// </summary>
    public static VitOnnxExportResult Save(string backbonePath, IReadOnlyList<HeadCheckpoint> heads, string outputPath, VitOnnxExportOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(backbonePath);
        ArgumentNullException.ThrowIfNull(heads);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputPath);
        options ??= new VitOnnxExportOptions();
        if (heads.Count == 0)
        {
            throw new ArgumentException("At least one task head is needed (<task>=<head.safetensors>).", nameof(heads));
        }

        if (heads.GroupBy(h => h.Task, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
        {
            throw new ArgumentException($"Task '{duplicate.Key}' is given {duplicate.Count()} times.", nameof(heads));
        }

        var loaded = new List<OnnxTaskHead>();
        try
        {
            // Heads first: they are small, and a bad head fails before the backbone is read.
            foreach (HeadCheckpoint head in heads)
            {
                ClassificationHead classifier = LoadHead(head.Path, head.Task);
                try
                {
                    loaded.Add(new OnnxTaskHead(head.Task, classifier));
                }
                catch
                {
                    classifier.Dispose();
                    throw;
                }
            }

            using LoadedBackbone backbone = ModelCheckpoints.LoadBackbone(backbonePath);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (key, value) in backbone.Metadata)
            {
                if (key.StartsWith(CarriedMetadataPrefix, StringComparison.Ordinal))
                {
                    metadata[key] = value;
                }
            }

            foreach (var (key, value) in options.Metadata ?? new Dictionary<string, string>())
            {
                metadata[key] = value;
            }

            var exporter = new DenseVitOnnxExporter(backbone.Config, backbone.Weights, loaded, options with { Metadata = metadata });
            OnnxGraphBuilder graph = exporter.BuildGraph();
            long bytes = graph.Save(outputPath);
            return new VitOnnxExportResult(Path.GetFullPath(outputPath), bytes, graph.InitializerBytes, graph.NodeCount, loaded.Select(h => h.Task).ToArray());
        }
        finally
        {
            foreach (OnnxTaskHead head in loaded)
            {
                head.Head.Dispose();
            }
        }
    }

    private static ClassificationHead LoadHead(string path, string task)
    {
        try
        {
            return ModelCheckpoints.LoadHead(path, expectedTask: task);
        }
        catch (Exception e) when (e is InvalidDataException or KeyNotFoundException)
        {
            // A plain linear layer (PyTorch's weight and bias) has no class names to put in the model: the pool gives them.
            string plain = e.Message.Contains(ClassificationHead.KindMetadataKey, StringComparison.Ordinal)
                ? " A head saved by PyTorch has no class names: register it with `mlmerge pool add --head` (which names the classes by the image sub-folders) and export with --zoo."
                : "";
            throw new ArgumentException($"{path}: not a classification head: {e.Message}{plain}", e);
        }
    }
}
