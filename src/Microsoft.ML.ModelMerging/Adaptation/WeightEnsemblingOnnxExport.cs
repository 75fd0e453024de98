using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>Router-file-to-ONNX export of a WEMoE / E-WEMoE model (what <c>mlmerge export-onnx --wemoe-routers</c> runs).</summary>
internal static class WeightEnsemblingOnnxExport
{
    /// <summary>
    /// Rebuilds the upscaled model from the zoo (pre-trained model, the experts and their heads, in the routers' expert
    /// order, see <see cref="WeightEnsemblingRouterFile.ExpertTasks"/>), loads the trained routers and writes the ONNX
    /// model to <paramref name="outputPath"/> through a temporary file renamed into place. One <c>scores_&lt;task&gt;</c>
    /// output per expert's task. The router file's test-time adaptation provenance (<c>mlmerge.tta.*</c>) and the expert
    /// tasks (<see cref="WeightEnsemblingRouterFile.TasksMetadataKey"/>) go into the model's metadata.
    /// </summary>
    /// <param name="routers">A router file, or a directory holding one (<see cref="WeightEnsemblingRouterFile.Open"/>).</param>
    /// <param name="zoo">Zoo directory with the pre-trained model, the experts and their heads.</param>
    /// <param name="outputPath">The .onnx file to write.</param>
    /// <param name="options">Scores, outputs, weight storage and extra metadata, as for a dense export.</param>
    /// <param name="taskVectorPrecision">Storage of the MLP task vectors; null follows <see cref="VitOnnxExportOptions.WeightPrecision"/>.</param>
    /// <param name="tasks">The experts' tasks in router order, needed only when the router file does not record them and they are not all the zoo's tasks.</param>
    public static VitOnnxExportResult Save(string routers, string zoo, string outputPath, VitOnnxExportOptions? options = null,
        OnnxWeightPrecision? taskVectorPrecision = null, IReadOnlyList<string>? tasks = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(routers);
        ArgumentException.ThrowIfNullOrWhiteSpace(zoo);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputPath);
        options ??= new VitOnnxExportOptions();
        var file = WeightEnsemblingRouterFile.Open(routers);
        var manifest = PoolManifest.Read(zoo);
        IReadOnlyList<string> expertTasks = file.ExpertTasks(manifest.Tasks.Select(t => t.Name).ToList(), tasks);

        using var experts = ExpertPool.Load(zoo, expertTasks);
        using var model = file.CreateModel(experts);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in file.Metadata)
        {
            if (key.StartsWith(WeightEnsemblingRouterFile.AdaptationMetadataPrefix, StringComparison.Ordinal))
            {
                metadata[key] = value;
            }
        }

        foreach (var (key, value) in WeightEnsemblingRouterFile.TaskMetadata(expertTasks))
        {
            metadata[key] = value;
        }

        foreach (var (key, value) in options.Metadata ?? new Dictionary<string, string>())
        {
            metadata[key] = value;
        }

        var heads = expertTasks.Select(task => new OnnxTaskHead(task, experts.Head(task))).ToList();
        var exporter = new WeightEnsemblingOnnxExporter(model, heads, options with { Metadata = metadata }, taskVectorPrecision);
        OnnxGraphBuilder graph = exporter.BuildGraph();
        long bytes = graph.Save(outputPath);
        return new VitOnnxExportResult(Path.GetFullPath(outputPath), bytes, graph.InitializerBytes, graph.NodeCount, expertTasks);
    }
}
