using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// One task of a TACT result: a merged backbone with that task's <see cref="ActivationCorrection"/>, exported as a dense
/// model whose graph rescales and shifts each site (<c>mlmerge.model_kind = tact</c>). Saving writes the correction to
/// <c>corrections-&lt;task&gt;.safetensors</c> and the backbone under <see cref="BackboneFileName"/>, a name tasks share
/// when they share the merged backbone, so a result of a task-agnostic base merge holds one backbone and small corrections.
/// </summary>
internal sealed class CorrectedVitOnnxExporter : DenseVitOnnxExporter
{
    /// <summary>The <c>mlmerge.model_kind</c> of a TACT-corrected model.</summary>
    public const string Kind = "tact";

    /// <summary>The backbone name of a result whose tasks share one merged backbone.</summary>
    public const string SharedBackboneFileName = "merged.safetensors";

    /// <summary>Metadata key of a saved correction naming the backbone file it corrects.</summary>
    public const string BackboneMetadataKey = "mlmerge.tact_backbone";

    private const string CorrectionsPrefix = "corrections-";

    /// <param name="config">The backbone's architecture.</param>
    /// <param name="weights">The merged backbone (read, not owned).</param>
    /// <param name="task">The task, with its head.</param>
    /// <param name="correction">The task's correction (read, not owned).</param>
    /// <param name="backboneFileName">The file the backbone is saved under: <see cref="SharedBackboneFileName"/> or one of the task's own.</param>
    /// <param name="options">Export options.</param>
    public CorrectedVitOnnxExporter(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, OnnxTaskHead task,
        ActivationCorrection correction, string backboneFileName, VitOnnxExportOptions? options = null)
        : base(config, weights, [task], options, correction ?? throw new ArgumentNullException(nameof(correction)))
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(backboneFileName);
        Task = task.Task;
        Correction = correction;
        BackboneFileName = backboneFileName;
    }

    public string Task { get; }

    /// <summary>The same model and head exported with other options (precision, score kind, outputs).</summary>
    public CorrectedVitOnnxExporter WithOptions(VitOnnxExportOptions options) =>
        new(Config, Weights, Heads[0], Correction, BackboneFileName, options);

    public ActivationCorrection Correction { get; }

    public string BackboneFileName { get; }

    /// <summary>The correction file of <paramref name="task"/> in a result directory.</summary>
    public static string CorrectionFileName(string task) => CorrectionsPrefix + task + ".safetensors";

    /// <summary>True for a result file holding a correction.</summary>
    public static bool IsCorrectionFile(string fileName) =>
        fileName.StartsWith(CorrectionsPrefix, StringComparison.Ordinal) && fileName.EndsWith(".safetensors", StringComparison.Ordinal);

    /// <summary>The backbone file of a task whose merged weights are its own (a task-conditioned base such as TALL masks).</summary>
    public static string TaskBackboneFileName(string task) => "merged-" + task + ".safetensors";

    protected override string ModelKind => Kind;

    /// <summary>Adds the scales and shifts (per channel, or per token and channel, at every site) to the backbone and head count.</summary>
    public override long ParameterCount =>
        base.ParameterCount + Correction.ParameterCount;

    /// <summary>Writes the backbone and the correction; tasks sharing a backbone write the same bytes to the same file name.</summary>
    public override IReadOnlyList<string> SaveWeights(string directory, IReadOnlyDictionary<string, string> metadata)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(metadata);
        ModelCheckpoints.SaveBackbone(Path.Combine(directory, BackboneFileName), Config, Weights, metadata);
        var own = new Dictionary<string, string>(metadata, StringComparer.Ordinal) { [BackboneMetadataKey] = BackboneFileName };
        string corrections = CorrectionFileName(Task);
        Correction.Save(Path.Combine(directory, corrections), Task, own);
        return [BackboneFileName, corrections];
    }
}
