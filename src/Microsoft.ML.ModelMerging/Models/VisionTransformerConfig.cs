using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// Shape and numerics of a CLIP-style Vision Transformer. The same architecture serves real Hugging Face CLIP vision
/// towers and our tiny 28×28 zoo models, so one config type describes both and travels in checkpoint metadata
/// (<see cref="MetadataKey"/>) as JSON.
/// </summary>
public sealed record VisionTransformerConfig
{
    /// <summary>Checkpoint metadata key under which <see cref="ToJson"/> is stored.</summary>
    public const string MetadataKey = "mlmerge.vit_config";

    /// <summary>OpenAI CLIP's per-channel RGB mean, used by every released CLIP vision tower.</summary>
    public static IReadOnlyList<float> ClipMean { get; } = [0.48145466f, 0.4578275f, 0.40821073f];

    /// <summary>OpenAI CLIP's per-channel RGB standard deviation.</summary>
    public static IReadOnlyList<float> ClipStd { get; } = [0.26862954f, 0.26130258f, 0.27577711f];

    /// <summary>Side of the square input image in pixels.</summary>
    public required int ImageSize { get; init; }

    /// <summary>Input channels: 1 (grayscale) or 3 (RGB).</summary>
    public required int Channels { get; init; }

    /// <summary>Side of the square patches; must divide <see cref="ImageSize"/>.</summary>
    public required int PatchSize { get; init; }

    /// <summary>Token width (hidden size).</summary>
    public required int Width { get; init; }

    /// <summary>Number of transformer blocks.</summary>
    public required int Layers { get; init; }

    /// <summary>Attention heads; must divide <see cref="Width"/>.</summary>
    public required int Heads { get; init; }

    /// <summary>Hidden size of each block's MLP (intermediate size).</summary>
    public required int MlpSize { get; init; }

    /// <summary>The MLP activation (default quick_gelu, CLIP's x·sigmoid(1.702x)).</summary>
    public VisionActivation Activation { get; init; } = VisionActivation.QuickGelu;

    /// <summary>ε of every LayerNorm (default 1e-5).</summary>
    public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>Output size of <c>visual_projection</c>; null = no projection, features are the post-LN CLS token.</summary>
    public int? ProjectionDim { get; init; }

    /// <summary>Per-channel mean subtracted from pixels in [0,1]; a single value applies to every channel.</summary>
    public IReadOnlyList<float> Mean { get; init; } = [0.5f];

    /// <summary>Per-channel standard deviation pixels are divided by; a single value applies to every channel.</summary>
    public IReadOnlyList<float> Std { get; init; } = [0.5f];

    /// <summary>Patches per image side.</summary>
    [JsonIgnore] public int GridSize => ImageSize / PatchSize;

    /// <summary>Patches per image (N).</summary>
    [JsonIgnore] public int PatchCount => GridSize * GridSize;

    /// <summary>Sequence length: the CLS token plus one token per patch (N+1).</summary>
    [JsonIgnore] public int TokenCount => PatchCount + 1;

    /// <summary>Width of one attention head.</summary>
    [JsonIgnore] public int HeadSize => Width / Heads;

    /// <summary>Size of the feature vector <c>Forward</c> returns (projection size, or width without projection).</summary>
    [JsonIgnore] public int FeatureDim => ProjectionDim ?? Width;

    /// <summary>Throws an <see cref="ArgumentException"/> listing every inconsistency, so a bad config fails before any tensor work.</summary>
    public void Validate()
    {
        var errors = new List<string>();
        void Positive(string name, int value)
        {
            if (value <= 0)
            {
                errors.Add($"{name} must be positive (got {value})");
            }
        }

        Positive(nameof(ImageSize), ImageSize);
        Positive(nameof(PatchSize), PatchSize);
        Positive(nameof(Width), Width);
        Positive(nameof(Layers), Layers);
        Positive(nameof(Heads), Heads);
        Positive(nameof(MlpSize), MlpSize);
        if (Channels is not (1 or 3))
        {
            errors.Add($"Channels must be 1 or 3 (got {Channels})");
        }

        if (ImageSize > 0 && PatchSize > 0 && ImageSize % PatchSize != 0)
        {
            errors.Add($"ImageSize {ImageSize} is not a multiple of PatchSize {PatchSize}");
        }

        if (Width > 0 && Heads > 0 && Width % Heads != 0)
        {
            errors.Add($"Width {Width} is not a multiple of Heads {Heads}");
        }

        if (!Enum.IsDefined(Activation))
        {
            errors.Add($"Activation {(int)Activation} is not a known activation");
        }

        if (!(LayerNormEps > 0) || double.IsInfinity(LayerNormEps))
        {
            errors.Add($"LayerNormEps must be a positive finite number (got {LayerNormEps.ToString(CultureInfo.InvariantCulture)})");
        }

        if (ProjectionDim is <= 0)
        {
            errors.Add($"ProjectionDim must be positive or null (got {ProjectionDim})");
        }

        CheckPerChannel(nameof(Mean), Mean, float.IsFinite, "finite", errors);
        CheckPerChannel(nameof(Std), Std, v => float.IsFinite(v) && v > 0, "positive and finite", errors);
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid VisionTransformerConfig: " + string.Join("; ", errors) + ".");
        }
    }

    private void CheckPerChannel(string name, IReadOnlyList<float>? values, Func<float, bool> valid, string what, List<string> errors)
    {
        if (values is null || (values.Count != 1 && values.Count != Channels))
        {
            errors.Add($"{name} needs 1 or {Channels} (Channels) values (got {values?.Count ?? 0})");
            return;
        }

        if (!values.All(valid))
        {
            errors.Add($"{name} values must be {what} (got [{string.Join(", ", values.Select(v => v.ToString(CultureInfo.InvariantCulture)))}])");
        }
    }

    /// <summary>The per-channel mean expanded to <see cref="Channels"/> values.</summary>
    public float[] MeanPerChannel() => Expand(Mean);

    /// <summary>The per-channel standard deviation expanded to <see cref="Channels"/> values.</summary>
    public float[] StdPerChannel() => Expand(Std);

    private float[] Expand(IReadOnlyList<float> values) =>
        values.Count == 1 ? Enumerable.Repeat(values[0], Channels).ToArray() : values.ToArray();

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Compact JSON with snake_case keys (<c>image_size</c>, <c>activation: "quick_gelu"</c>, ...).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>
    /// The fields in which this config differs from <paramref name="other"/>, as <c>name: mine, theirs</c> (e.g.
    /// <c>activation: "gelu", "quick_gelu"</c>) with <paramref name="theirs"/> naming the other side; empty when they agree.
    /// </summary>
    public IReadOnlyList<string> DifferencesFrom(VisionTransformerConfig other, string theirs = "the other's")
    {
        ArgumentNullException.ThrowIfNull(other);
        using var mine = JsonDocument.Parse(ToJson());
        using var others = JsonDocument.Parse(other.ToJson());
        return [.. mine.RootElement.EnumerateObject()
            .Select(p => (p.Name, Value: p.Value.GetRawText(), Other: others.RootElement.TryGetProperty(p.Name, out var v) ? v.GetRawText() : "(none)"))
            .Where(d => d.Value != d.Other)
            .Select(d => $"{d.Name}: {d.Value}, {theirs} {d.Other}")];
    }

    /// <summary>Reads <see cref="ToJson"/> output and validates it.</summary>
    public static VisionTransformerConfig FromJson(string json)
    {
        VisionTransformerConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<VisionTransformerConfig>(json, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new FormatException($"Invalid '{MetadataKey}' JSON: {e.Message}", e);
        }

        if (config is null)
        {
            throw new FormatException($"Invalid '{MetadataKey}' JSON: expected an object, got null.");
        }

        config.Validate();
        return config;
    }

    /// <summary>
    /// Builds a config from a Hugging Face CLIP <c>config.json</c>: either a full <c>CLIPConfig</c> (fields read from
    /// <c>vision_config</c>, <c>projection_dim</c> from the top level) or a <c>CLIPVisionConfig</c>. Missing fields take
    /// Hugging Face's CLIPVisionConfig defaults (ViT-B/32). Whether a <c>visual_projection</c> exists is inferred from
    /// <c>architectures</c> (<c>CLIPModel</c>/<c>CLIPVisionModelWithProjection</c>: yes, otherwise no) unless
    /// <paramref name="withProjection"/> says so. Mean/std come from <paramref name="preprocessorConfigJson"/>
    /// (<c>image_mean</c>/<c>image_std</c>) when given, else CLIP's.
    /// </summary>
    public static VisionTransformerConfig FromHuggingFaceConfig(string json, bool? withProjection = null, string? preprocessorConfigJson = null)
    {
        JsonObject root = ParseObject(json, "Hugging Face config.json");
        bool isFullClip = root["vision_config"] is JsonObject;
        JsonObject vision = isFullClip ? (JsonObject)root["vision_config"]! : root;

        int Int(string key, int fallback) => ReadInt(vision, key) ?? fallback;
        var architectures = (root["architectures"] as JsonArray)?.Select(a => a?.GetValue<string>()).ToArray() ?? [];
        bool projection = withProjection ?? (isFullClip
            || architectures.Any(a => a is "CLIPModel" or "CLIPVisionModelWithProjection"));
        int projectionDim = (isFullClip ? ReadInt(root, "projection_dim") : null) ?? ReadInt(vision, "projection_dim") ?? 512;

        // CLIP's statistics are per RGB channel; a model of another channel count without a preprocessor config gets 0.5/0.5.
        bool rgb = (ReadInt(vision, "num_channels") ?? 3) == 3;
        IReadOnlyList<float> mean = rgb ? ClipMean : [0.5f], std = rgb ? ClipStd : [0.5f];
        if (preprocessorConfigJson is not null)
        {
            JsonObject preprocessor = ParseObject(preprocessorConfigJson, "Hugging Face preprocessor_config.json");
            mean = ReadFloats(preprocessor, "image_mean") ?? mean;
            std = ReadFloats(preprocessor, "image_std") ?? std;
        }

        var config = new VisionTransformerConfig
        {
            ImageSize = Int("image_size", 224),
            Channels = Int("num_channels", 3),
            PatchSize = Int("patch_size", 32),
            Width = Int("hidden_size", 768),
            Layers = Int("num_hidden_layers", 12),
            Heads = Int("num_attention_heads", 12),
            MlpSize = Int("intermediate_size", 3072),
            Activation = vision["hidden_act"] is JsonNode act ? VisionActivations.Parse(act.GetValue<string>()) : VisionActivation.QuickGelu,
            LayerNormEps = vision["layer_norm_eps"] is JsonNode eps ? eps.GetValue<double>() : 1e-5,
            ProjectionDim = projection ? projectionDim : null,
            Mean = mean,
            Std = std,
        };
        config.Validate();
        return config;
    }

    private static JsonObject ParseObject(string json, string what)
    {
        try
        {
            return JsonNode.Parse(json) as JsonObject ?? throw new FormatException($"{what}: expected a JSON object.");
        }
        catch (JsonException e)
        {
            throw new FormatException($"{what} is not valid JSON: {e.Message}", e);
        }
    }

    private static int? ReadInt(JsonObject node, string key)
    {
        if (node[key] is not JsonValue value)
        {
            return null;
        }

        return value.TryGetValue(out int i) ? i : throw new FormatException($"Hugging Face config field '{key}' must be an integer (got {value.ToJsonString()}).");
    }

    private static float[]? ReadFloats(JsonObject node, string key) =>
        node[key] switch
        {
            null => null,
            JsonArray array => array.Select(v => v?.GetValue<float>() ?? throw new FormatException($"'{key}' contains null.")).ToArray(),
            JsonValue single => [single.GetValue<float>()],
            var other => throw new FormatException($"'{key}' must be a number or an array of numbers (got {other.ToJsonString()})."),
        };

    /// <inheritdoc/>
    public bool Equals(VisionTransformerConfig? other) =>
        other is not null
        && ImageSize == other.ImageSize && Channels == other.Channels && PatchSize == other.PatchSize
        && Width == other.Width && Layers == other.Layers && Heads == other.Heads && MlpSize == other.MlpSize
        && Activation == other.Activation && LayerNormEps.Equals(other.LayerNormEps) && ProjectionDim == other.ProjectionDim
        && Mean.SequenceEqual(other.Mean) && Std.SequenceEqual(other.Std);

    /// <inheritdoc/>
    public override int GetHashCode() =>
        HashCode.Combine(HashCode.Combine(ImageSize, Channels, PatchSize, Width, Layers, Heads, MlpSize),
            Activation, LayerNormEps, ProjectionDim, Mean.Count, Std.Count);
}
