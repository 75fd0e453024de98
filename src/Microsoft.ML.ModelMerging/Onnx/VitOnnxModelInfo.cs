using System.Text.Json;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>One task of an exported Vision Transformer classifier, as described by the model's metadata.</summary>
/// <param name="Name">Task name.</param>
/// <param name="ScoresOutput">Graph output holding the task's scores [batch, classes].</param>
/// <param name="HeadKind">Kind of the head that produced the scores.</param>
/// <param name="ClassNames">Class names in score order.</param>
public sealed record VitOnnxTask(string Name, string ScoresOutput, ClassificationHeadKind HeadKind, IReadOnlyList<string> ClassNames);

/// <summary>
/// What an exported Vision Transformer model holds, stored in its <c>metadata_props</c> so a consumer (the ML.NET adapter,
/// <c>mlmerge</c>, a user with ONNX Runtime's <c>ModelMetadata.CustomMetadataMap</c>) finds inputs, outputs, tasks and
/// classes without knowing how it was built. Keys:
/// <list type="bullet">
/// <item><c>mlmerge.model_kind</c>: <c>dense_vit</c>, or the kind of a derived exporter (e.g. WEMoE).</item>
/// <item><c>mlmerge.vit_config</c>: the <see cref="VisionTransformerConfig"/> JSON (image size, channels, mean/std, ...).</item>
/// <item><c>mlmerge.input</c>: the input name; <c>mlmerge.input_range</c>: <c>0-1</c>, the pixel values it takes (the graph
/// normalises with the config's mean and std itself); <c>mlmerge.features</c>: the features output name (absent when not exported).</item>
/// <item><c>mlmerge.scores</c>: <c>probabilities</c> or <c>logits</c>; <c>mlmerge.weight_precision</c>: <c>float32</c> or <c>float16</c>.</item>
/// <item><c>mlmerge.tasks</c>: JSON array of task names in output order; per task <c>mlmerge.task.&lt;task&gt;.output</c>,
/// <c>mlmerge.task.&lt;task&gt;.head_kind</c> (<c>linear</c>/<c>clip</c>) and <c>mlmerge.task.&lt;task&gt;.class_names</c> (JSON array).</item>
/// </list>
/// </summary>
public sealed record VitOnnxModelInfo
{
    /// <summary>Metadata key of <see cref="ModelKind"/>.</summary>
    public const string ModelKindKey = "mlmerge.model_kind";
    /// <summary>Metadata key of the <see cref="VisionTransformerConfig"/> JSON.</summary>
    public const string ConfigKey = VisionTransformerConfig.MetadataKey;
    /// <summary>Metadata key of the input name.</summary>
    public const string InputKey = "mlmerge.input";
    /// <summary>Metadata key of the pixel range the input takes: <c>0-1</c> as exported (<c>0-255</c> once ML.NET's adapter scales bytes).</summary>
    public const string InputRangeKey = "mlmerge.input_range";
    /// <summary>Metadata key of the features output name.</summary>
    public const string FeaturesKey = "mlmerge.features";
    /// <summary>Metadata key of the score kind (<c>probabilities</c> or <c>logits</c>).</summary>
    public const string ScoresKey = "mlmerge.scores";
    /// <summary>Metadata key of the weight precision (<c>float32</c> or <c>float16</c>).</summary>
    public const string WeightPrecisionKey = "mlmerge.weight_precision";
    /// <summary>Metadata key of the JSON array of task names, in output order.</summary>
    public const string TasksKey = "mlmerge.tasks";
    private const string TaskPrefix = "mlmerge.task.";

    /// <summary>What built the model: <c>dense_vit</c>, or a derived exporter's kind (e.g. WEMoE, TACT).</summary>
    public required string ModelKind { get; init; }

    /// <summary>The backbone's configuration: image size, channels, mean and std, ...</summary>
    public required VisionTransformerConfig Config { get; init; }

    /// <summary>Input of pixels in [0,1], float [batch, C·H·W], channel-major (ML.NET <c>ExtractPixels</c> layout).</summary>
    public required string InputName { get; init; }

    /// <summary>Output of the features [batch, FeatureDim], or null when the model has none.</summary>
    public string? FeaturesName { get; init; }

    /// <summary>Whether the score outputs are softmax probabilities or raw logits.</summary>
    public required OnnxScoreKind Scores { get; init; }

    /// <summary>Whether the weight matrices are stored as float32 or float16.</summary>
    public required OnnxWeightPrecision WeightPrecision { get; init; }

    /// <summary>The tasks, in output order.</summary>
    public required IReadOnlyList<VitOnnxTask> Tasks { get; init; }

    /// <summary>The metadata key of a per-task <paramref name="field"/> (<c>output</c>, <c>head_kind</c>, <c>class_names</c>): <c>mlmerge.task.&lt;task&gt;.&lt;field&gt;</c>.</summary>
    public static string TaskKey(string task, string field) => $"{TaskPrefix}{task}.{field}";

    /// <summary>Whether the exporter writes <paramref name="key"/> itself (user metadata may not use it).</summary>
    public static bool IsReservedKey(string key) =>
        key is ModelKindKey or ConfigKey or InputKey or InputRangeKey or FeaturesKey or ScoresKey or WeightPrecisionKey or TasksKey
        || key.StartsWith(TaskPrefix, StringComparison.Ordinal);

    /// <summary>The metadata entries describing this model.</summary>
    public Dictionary<string, string> ToMetadata()
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ModelKindKey] = ModelKind,
            [ConfigKey] = Config.ToJson(),
            [InputKey] = InputName,
            [InputRangeKey] = "0-1",
            [ScoresKey] = Scores == OnnxScoreKind.Probabilities ? "probabilities" : "logits",
            [WeightPrecisionKey] = WeightPrecision == OnnxWeightPrecision.Float32 ? "float32" : "float16",
            [TasksKey] = JsonSerializer.Serialize(Tasks.Select(t => t.Name).ToArray()),
        };
        if (FeaturesName is not null)
        {
            metadata[FeaturesKey] = FeaturesName;
        }

        foreach (VitOnnxTask task in Tasks)
        {
            metadata[TaskKey(task.Name, "output")] = task.ScoresOutput;
            metadata[TaskKey(task.Name, "head_kind")] = task.HeadKind == ClassificationHeadKind.Linear ? "linear" : "clip";
            metadata[TaskKey(task.Name, "class_names")] = JsonSerializer.Serialize(task.ClassNames);
        }

        return metadata;
    }

    /// <summary>Reads the description back from a model's metadata (e.g. <c>InferenceSession.ModelMetadata.CustomMetadataMap</c>).</summary>
    /// <exception cref="InvalidDataException">A key is missing or malformed: the model was not written by our exporters.</exception>
    public static VitOnnxModelInfo FromMetadata(IReadOnlyDictionary<string, string> metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        string Require(string key) => metadata.TryGetValue(key, out string? value)
            ? value
            : throw new InvalidDataException($"ONNX model metadata lacks '{key}'; it was not exported by Microsoft.ML.ModelMerging.");

        VisionTransformerConfig config;
        try
        {
            config = VisionTransformerConfig.FromJson(Require(ConfigKey));
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            throw new InvalidDataException($"ONNX model metadata '{ConfigKey}' is invalid: {e.Message}", e);
        }

        var tasks = new List<VitOnnxTask>();
        foreach (string name in ReadStrings(Require(TasksKey), TasksKey))
        {
            string kind = Require(TaskKey(name, "head_kind"));
            tasks.Add(new VitOnnxTask(
                name,
                Require(TaskKey(name, "output")),
                kind switch
                {
                    "linear" => ClassificationHeadKind.Linear,
                    "clip" => ClassificationHeadKind.Clip,
                    _ => throw new InvalidDataException($"ONNX model metadata '{TaskKey(name, "head_kind")}' is '{kind}'; expected 'linear' or 'clip'."),
                },
                ReadStrings(Require(TaskKey(name, "class_names")), TaskKey(name, "class_names"))));
        }

        return new VitOnnxModelInfo
        {
            ModelKind = Require(ModelKindKey),
            Config = config,
            InputName = Require(InputKey),
            FeaturesName = metadata.TryGetValue(FeaturesKey, out string? features) ? features : null,
            Scores = Require(ScoresKey) switch
            {
                "probabilities" => OnnxScoreKind.Probabilities,
                "logits" => OnnxScoreKind.Logits,
                var other => throw new InvalidDataException($"ONNX model metadata '{ScoresKey}' is '{other}'; expected 'probabilities' or 'logits'."),
            },
            WeightPrecision = Require(WeightPrecisionKey) switch
            {
                "float32" => OnnxWeightPrecision.Float32,
                "float16" => OnnxWeightPrecision.Float16,
                var other => throw new InvalidDataException($"ONNX model metadata '{WeightPrecisionKey}' is '{other}'; expected 'float32' or 'float16'."),
            },
            Tasks = tasks,
        };
    }

    private static string[] ReadStrings(string json, string key)
    {
        try
        {
            string[]? values = JsonSerializer.Deserialize<string[]>(json);
            return values is not null && values.All(v => v is not null)
                ? values
                : throw new InvalidDataException($"ONNX model metadata '{key}' must be a JSON array of strings (got {json}).");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"ONNX model metadata '{key}' is not a JSON array of strings: {e.Message}", e);
        }
    }
}
