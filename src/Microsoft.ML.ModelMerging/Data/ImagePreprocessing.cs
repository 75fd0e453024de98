using System.Globalization;
using System.Text.Json.Nodes;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// How images of any size become a model's input, as a Hugging Face <c>preprocessor_config.json</c> (CLIPImageProcessor)
/// states it: resize the shortest side to <see cref="ShortestEdge"/> (bicubic), centre crop <see cref="CropSize"/>×<see cref="CropSize"/>,
/// rescale by 1/255 to [0, 1]. The per-channel mean/std belong to the model (its config, and its ONNX graph).
/// <para>
/// Resizing is ML.NET's <c>ResizeImages</c> with its default <c>IsoCrop</c> (the shorter side scaled to the target, the
/// longer side centre-cropped), so a saved ML.NET pipeline given the same files sees exactly the pixels training and
/// evaluation saw (<see cref="PreprocessedImageReader"/>). That equals "resize shortest side, then centre
/// crop" when <see cref="ShortestEdge"/> = <see cref="CropSize"/>, which holds for every released CLIP model; others are refused.
/// </para>
/// </summary>
public sealed record ImagePreprocessing
{
    /// <summary>The file name Hugging Face gives the processor's settings.</summary>
    public const string HuggingFaceFileName = "preprocessor_config.json";

    /// <summary>PIL's code for bicubic resampling, the only <c>resample</c> CLIP processors use.</summary>
    private const int PilBicubic = 3;

    /// <summary>Side the shorter image side is resized to.</summary>
    public required int ShortestEdge { get; init; }

    /// <summary>Side of the square centre crop: the model's image size.</summary>
    public required int CropSize { get; init; }

    /// <summary><c>bicubic</c> (the only one accepted).</summary>
    public string Resample { get; init; } = "bicubic";

    /// <summary>Always RGB: CLIP processors convert every image (grayscale, palette, alpha) to RGB first.</summary>
    public string ColorMode { get; init; } = "rgb";

    /// <summary>Resize and crop to the same square side, the processor of every CLIP model.</summary>
    public static ImagePreprocessing Square(int size) => new() { ShortestEdge = size, CropSize = size };

    /// <summary>Reads a <c>preprocessor_config.json</c>; <paramref name="source"/> names it in errors.</summary>
    /// <exception cref="InvalidDataException">The file is not a CLIP-style processor config this library reproduces exactly.</exception>
    public static ImagePreprocessing FromHuggingFace(string json, string source)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException($"{source}: expected a JSON object.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{source} is not valid JSON: {e.Message}", e);
        }

        // `size` is {"shortest_edge": n} in current files and a bare n in older ones; `crop_size` {"height", "width"} or n.
        int shortest = root["size"] switch
        {
            JsonObject size when size["shortest_edge"] is JsonValue v => v.GetValue<int>(),
            JsonValue v => v.GetValue<int>(),
            null => throw new InvalidDataException($"{source}: no 'size' (expected {{\"shortest_edge\": n}})."),
            var other => throw new InvalidDataException($"{source}: 'size' {other.ToJsonString()} is not a shortest-edge resize (expected {{\"shortest_edge\": n}})."),
        };
        int crop = root["crop_size"] switch
        {
            JsonObject size when size["height"] is JsonValue h && size["width"] is JsonValue w =>
                h.GetValue<int>() == w.GetValue<int>() ? h.GetValue<int>()
                    : throw new InvalidDataException($"{source}: crop_size {size.ToJsonString()} is not square; CLIP models take square images."),
            JsonValue v => v.GetValue<int>(),
            null => shortest,
            var other => throw new InvalidDataException($"{source}: 'crop_size' {other.ToJsonString()} is not understood (expected {{\"height\": n, \"width\": n}} or n)."),
        };

        foreach (var (key, expected) in new[] { ("do_resize", true), ("do_center_crop", true), ("do_rescale", true), ("do_normalize", true) })
            if (root[key] is JsonValue flag && flag.GetValue<bool>() != expected)
                throw new InvalidDataException($"{source}: '{key}' is {flag.GetValue<bool>().ToString().ToLowerInvariant()}; only the full CLIP preprocessing (resize, centre crop, rescale, normalize) is reproduced.");
        if (root["resample"] is JsonValue resample && resample.GetValue<int>() != PilBicubic)
            throw new InvalidDataException($"{source}: resample {resample.GetValue<int>()} is not bicubic ({PilBicubic}), the resampling ML.NET's ResizeImages reproduces.");
        if (root["rescale_factor"] is JsonValue factor && Math.Abs(factor.GetValue<double>() * 255 - 1) > 1e-6)
            throw new InvalidDataException($"{source}: rescale_factor {factor.GetValue<double>().ToString(CultureInfo.InvariantCulture)} is not 1/255.");

        var preprocessing = new ImagePreprocessing { ShortestEdge = shortest, CropSize = crop };
        preprocessing.Validate(source);
        return preprocessing;
    }

    /// <summary>Refuses settings the ML.NET pipeline could not reproduce exactly.</summary>
    /// <exception cref="InvalidDataException">Sizes are not positive, or the shortest edge differs from the crop.</exception>
    public void Validate(string source)
    {
        if (ShortestEdge <= 0 || CropSize <= 0)
            throw new InvalidDataException($"{source}: image sizes must be positive (shortest_edge {ShortestEdge}, crop_size {CropSize}).");
        if (ShortestEdge != CropSize)
            throw new InvalidDataException(
                $"{source}: shortest_edge {ShortestEdge} differs from crop_size {CropSize}; ML.NET's ResizeImages (IsoCrop) reproduces only " +
                "a resize to the crop size followed by a centre crop, as every CLIP processor does. Resize your images beforehand, or set both to the crop size.");
        if (Resample != "bicubic" || ColorMode != "rgb")
            throw new InvalidDataException($"{source}: resample '{Resample}' / color mode '{ColorMode}' unsupported (expected bicubic / rgb).");
    }
}
