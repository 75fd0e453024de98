using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Onnx;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>The value range of the input pixel column.</summary>
public enum PixelRange
{
    /// <summary>0 to 255: what ML.NET's <c>ExtractPixels</c> produces with its defaults (<c>scaleImage: 1</c>). The model divides by 255.</summary>
    Byte,

    /// <summary>0 to 1: <c>ExtractPixels(..., scaleImage: 1f / 255)</c>, or pixels prepared by hand (e.g. <see cref="Data.ImageDataset"/>).</summary>
    Unit,
}

/// <summary>
/// Options of <see cref="MergeExpertsCatalog.MergeExperts(TransformsCatalog, Pools.ExpertPool, MergeExpertsOptions)"/>: how to merge (a registered <see cref="Method"/> with its
/// <see cref="Parameters"/>, or any <see cref="Algorithm"/>), which column holds the pixels and what they look like,
/// which tasks to predict, and where the ONNX model goes.
/// </summary>
public sealed class MergeExpertsOptions
{
    /// <summary>Default <see cref="InputColumnName"/>.</summary>
    public const string DefaultInputColumnName = "pixels";

    /// <summary>Default <see cref="ScoreColumnName"/> (ML.NET's multiclass convention).</summary>
    public const string DefaultScoreColumnName = "Score";

    /// <summary>Default <see cref="PredictedLabelColumnName"/> (ML.NET's multiclass convention).</summary>
    public const string DefaultPredictedLabelColumnName = "PredictedLabel";

    /// <summary>
    /// Any algorithm of <see cref="MergeAlgorithmRegistry.Default"/> (<c>mlmerge merge --list</c>): a weight-only method, a
    /// data-based one (<c>fisher</c>, <c>regmean</c>, which read the pool's labeled training examples), or one trained by
    /// test-time adaptation on the unlabeled images of <c>Fit</c> (<c>wemoe</c>, <c>e-wemoe</c>, <c>adamerging-task</c>,
    /// <c>adamerging-layer</c>), or <c>tact</c>, which measures them; those five need <see cref="TaskColumnName"/> and learn
    /// from the tasks that occur in the data. Ignored when <see cref="Algorithm"/> is set.
    /// </summary>
    public string Method { get; set; } = "task-arithmetic";

    /// <summary>Parameters of the method by name (e.g. <c>lambda</c> → <c>0.3</c>, <c>steps</c> → <c>200</c>); absent ones take their defaults.</summary>
    public IDictionary<string, string> Parameters => _parameters;

    private Dictionary<string, string> _parameters = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>An algorithm of one's own (see the README's recipe); when set, <see cref="Method"/> is ignored, <see cref="Parameters"/> still apply.</summary>
    public IMergeAlgorithm? Algorithm { get; set; }

    /// <summary>
    /// The input column: a known-size vector of <see cref="float"/> holding each image's pixels channel-major
    /// (C·H·W, ML.NET <c>ExtractPixels</c>' layout with <c>interleavePixelColors: false</c>, its default), after the image was
    /// resized to the model's size. A single-channel model also accepts the 3·H·W of <c>ExtractPixels</c>' default RGB
    /// extraction and takes their luma 0.299·R + 0.587·G + 0.114·B, as <c>ConvertToGrayscale</c> and the pool's image reader do.
    /// </summary>
    public string InputColumnName { get; set; } = DefaultInputColumnName;

    /// <summary>The range of the input values; the default matches <c>ExtractPixels</c>' default output (0..255).</summary>
    public PixelRange InputRange { get; set; } = PixelRange.Byte;

    /// <summary>
    /// The one task to predict, or null for every task of the expert set. With one task the output columns are
    /// <see cref="ScoreColumnName"/> and <see cref="PredictedLabelColumnName"/>; with every task they are suffixed
    /// <c>_&lt;task&gt;</c>. Methods whose weights depend on the task (TALL masks, consensus, EMR) export that task's own
    /// model for each task.
    /// </summary>
    public string? Task { get; set; }

    /// <summary>Name of the class-probability (or logit, see <see cref="Scores"/>) vector column.</summary>
    public string ScoreColumnName { get; set; } = DefaultScoreColumnName;

    /// <summary>Name of the predicted class-name column (text).</summary>
    public string PredictedLabelColumnName { get; set; } = DefaultPredictedLabelColumnName;

    /// <summary>Whether score columns hold softmax probabilities (default) or raw logits.</summary>
    public OnnxScoreKind Scores { get; set; } = OnnxScoreKind.Probabilities;

    /// <summary>Storage of the exported weight matrices; float16 halves the file and computes in float32.</summary>
    public OnnxWeightPrecision WeightPrecision { get; set; } = OnnxWeightPrecision.Float32;

    /// <summary>
    /// Where to write the ONNX model. Null (default): a temporary file that the fitted transformer deletes when disposed.
    /// A path given here is the user's: it is kept. Task-specific methods predicting several tasks write one model per
    /// task, named <c>&lt;path without .onnx&gt;.&lt;task&gt;.onnx</c>.
    /// </summary>
    public string? ModelPath { get; set; }

    /// <summary>
    /// Column naming each row's task (text), read only by strategies that learn from unlabeled images, so they can draw
    /// images per task; the test-time adaptation strategies require it (each task head adapts on its own task's images).
    /// </summary>
    public string? TaskColumnName { get; set; }

    /// <summary>
    /// Told what <c>Fit</c> is doing (merging, each adaptation step with its loss, data passes), synchronously. The same
    /// reports go to <c>MLContext.Log</c> (stage changes and every tenth of a stage).
    /// </summary>
    public IProgress<AlgorithmProgress>? Progress { get; set; }

    /// <summary>Cancels a running <c>Fit</c> (between adaptation steps, examples, tensors); nothing it wrote is left behind.</summary>
    public CancellationToken Cancellation { get; set; }

    /// <summary>
    /// Passed to ML.NET's <c>ApplyOnnxModel</c>: the CUDA device of ONNX Runtime, or null for the CPU. The estimator checks
    /// that the ONNX Runtime in use has the CUDA execution provider (the CPU package does not): without it, it scores on the
    /// CPU when <see cref="FallbackToCpu"/> is set and refuses the setting otherwise.
    /// </summary>
    public int? GpuDeviceId { get; set; }

    /// <summary>Passed to ML.NET's <c>ApplyOnnxModel</c>: fall back to the CPU when the GPU cannot be used.</summary>
    public bool FallbackToCpu { get; set; }

    /// <summary>
    /// Threads ONNX Runtime uses inside one operator of a scoring session (null: ONNX Runtime's default, every core).
    /// Methods that give one model per task (TACT, TALL masks, EMR) open one session per task: 1 keeps their sessions from
    /// competing for the cores.
    /// </summary>
    public int? OnnxIntraOpThreads { get; set; }

    /// <summary>Threads ONNX Runtime uses across independent operators of a scoring session (null: its default).</summary>
    public int? OnnxInterOpThreads { get; set; }

    /// <summary>A copy of these options that runs <paramref name="setting"/>'s method with its parameters (and no <see cref="Algorithm"/>).</summary>
    public MergeExpertsOptions WithSetting(MergeCandidate setting)
    {
        ArgumentNullException.ThrowIfNull(setting);
        var copy = (MergeExpertsOptions)MemberwiseClone();
        copy.Algorithm = null;
        copy.Method = setting.Method;
        // MemberwiseClone shares the dictionary: give the copy its own.
        copy._parameters = new Dictionary<string, string>(setting.Parameters, StringComparer.OrdinalIgnoreCase);
        return copy;
    }

    /// <summary>Runs the algorithm of <paramref name="settings"/> with exactly the parameters it sets (the others take their defaults).</summary>
    public MergeExpertsOptions Use(AlgorithmSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        Algorithm = null;
        Method = settings.Method;
        _parameters = new Dictionary<string, string>(settings.ToParameters().Values, StringComparer.OrdinalIgnoreCase);
        return this;
    }

    /// <summary>The algorithm this estimator runs (<see cref="Algorithm"/>, or <see cref="Method"/> from the registry) and its parameters.</summary>
    /// <exception cref="ArgumentException">Unknown method.</exception>
    public (IMergeAlgorithm Algorithm, MergeParameters Parameters) CreateAlgorithm()
    {
        if (Algorithm is null && string.IsNullOrWhiteSpace(Method))
            throw new ArgumentException($"MergeExperts: Method is not set; name an algorithm of the registry ({string.Join(", ", MergeAlgorithmRegistry.Default.Algorithms.Select(a => a.Name))}) or set Algorithm.", nameof(Method));
        return (Algorithm ?? MergeAlgorithmRegistry.Default.Get(Method), new MergeParameters(Parameters));
    }
}
