using System.Globalization;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// How the values of the input column map to the model's pixels: C·H·W channel-major values, or — for a single-channel
/// model — 3·H·W values of RGB planes, of which it takes the luma 0.299·R + 0.587·G + 0.114·B (ITU-R BT.601, what ML.NET's
/// ConvertToGrayscale and the pool's image reader compute, so a colour image scores as `mlmerge eval` saw it). The exported
/// model and <see cref="ToUnitPixels"/> apply the same conversion.
/// </summary>
internal sealed record PixelInputLayout(int Channels, int ImageSize, bool TakesLumaOfRgbPlanes)
{
    /// <summary>The weights of R, G and B in the luma of a single-channel model's input.</summary>
    public static readonly float[] LumaWeights = [0.299f, 0.587f, 0.114f];

    public int PlaneSize => ImageSize * ImageSize;

    /// <summary>Values per image the model computes on: C·H·W.</summary>
    public int ModelValues => Channels * PlaneSize;

    /// <summary>Values per row of the input column.</summary>
    public int InputValues => TakesLumaOfRgbPlanes ? 3 * PlaneSize : ModelValues;

    /// <summary>The layouts a model of <paramref name="config"/> accepts, preferred first.</summary>
    public static IReadOnlyList<PixelInputLayout> Accepted(VisionTransformerConfig config)
    {
        var exact = new PixelInputLayout(config.Channels, config.ImageSize, TakesLumaOfRgbPlanes: false);
        return config.Channels == 1 ? [exact, exact with { TakesLumaOfRgbPlanes = true }] : [exact];
    }

    /// <summary>The layout for an input column of <paramref name="values"/> values per row, or null when none fits.</summary>
    public static PixelInputLayout? ForInputValues(VisionTransformerConfig config, int values) =>
        Accepted(config).FirstOrDefault(layout => layout.InputValues == values);

    /// <summary>What the input column must hold, for error messages.</summary>
    public static string Describe(VisionTransformerConfig config)
    {
        int h = config.ImageSize, c = config.Channels;
        string size = string.Create(CultureInfo.InvariantCulture, $"{h}×{h}");
        string exact = string.Create(CultureInfo.InvariantCulture, $"{c * h * h} values ({c}×{size}, channel-major");
        return config.Channels == 1
            ? exact + string.Create(CultureInfo.InvariantCulture, $": ExtractPixels(colorsToExtract: ColorBits.Red) of a grayscale {size} image) or {3 * h * h} values (3×{size} RGB planes, ExtractPixels' default; their luma is taken)")
            : exact + $": ExtractPixels of a {size} image)";
    }

    /// <summary>
    /// Converts one row of the input column to the model's C·H·W pixels in [0, 1], as the exported model does: the RGB
    /// planes' luma when <see cref="TakesLumaOfRgbPlanes"/>, then divided by 255 for <see cref="PixelRange.Byte"/>.
    /// </summary>
    public void ToUnitPixels(ReadOnlySpan<float> input, PixelRange range, Span<float> output)
    {
        if (input.Length != InputValues || output.Length != ModelValues)
        {
            throw new ArgumentException($"Expected {InputValues} input and {ModelValues} output values, got {input.Length} and {output.Length}.");
        }

        if (TakesLumaOfRgbPlanes)
        {
            int plane = PlaneSize;
            for (int i = 0; i < plane; i++)
            {
                output[i] = (LumaWeights[0] * input[i]) + (LumaWeights[1] * input[plane + i]) + (LumaWeights[2] * input[(2 * plane) + i]);
            }
        }
        else
        {
            input.CopyTo(output);
        }

        if (range == PixelRange.Byte)
        {
            for (int i = 0; i < output.Length; i++)
            {
                output[i] /= 255f;
            }
        }
    }
}
