using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>Checks of the pixel column's values that a schema cannot express, run by <c>Fit</c> before any work.</summary>
internal static class PixelInputChecks
{
    /// <summary>Rows looked at by <see cref="CheckRange"/>.</summary>
    private const int RangeCheckRows = 16;

    /// <summary>
    /// Catches the likely mix-up of pixel scales on the first rows of the data: values above 1 with <see cref="PixelRange.Unit"/>,
    /// values above 255 with <see cref="PixelRange.Byte"/> (a shifted or scaled ExtractPixels), or images that are not all
    /// black but never exceed 1 with <see cref="PixelRange.Byte"/> (ExtractPixels with <c>scaleImage: 1f / 255</c>). An empty
    /// data view passes.
    /// </summary>
    public static void CheckRange(IDataView input, string inputColumn, PixelRange range)
    {
        DataViewSchema.Column column = input.Schema[inputColumn];
        float max = 0;
        int rows = 0;
        using (DataViewRowCursor cursor = input.GetRowCursor([column]))
        {
            var getter = cursor.GetGetter<VBuffer<float>>(column);
            VBuffer<float> values = default;
            while (rows < RangeCheckRows)
            {
                try
                {
                    if (!cursor.MoveNext()) break;
                    getter(ref values);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    throw InputReadFailure.Explain(input, inputColumn, rows, e);
                }

                foreach (float value in values.GetValues())
                {
                    if (!float.IsFinite(value) || value < 0)
                    {
                        throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                            $"MergeExperts: input column '{inputColumn}' has value {value} in row {rows}; pixels must be finite and non-negative."));
                    }

                    max = Math.Max(max, value);
                }

                rows++;
            }
        }

        if (range == PixelRange.Unit && max > 1)
        {
            throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                $"MergeExperts: input column '{inputColumn}' has values up to {max} but InputRange is Unit (0 to 1). ") +
                "ExtractPixels gives 0..255 unless scaleImage: 1f / 255 is set: use InputRange = PixelRange.Byte.");
        }

        if (range == PixelRange.Byte && max > 255)
        {
            throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                $"MergeExperts: input column '{inputColumn}' has values up to {max} but InputRange is Byte (0 to 255): ") +
                "an ExtractPixels offsetImage or scaleImage moves the pixels out of range; extract them unshifted and unscaled.");
        }

        if (range == PixelRange.Byte && max is > 0 and <= 1)
        {
            throw new InvalidDataException(
                string.Create(CultureInfo.InvariantCulture, $"MergeExperts: the first {rows} row(s) of input column '{inputColumn}' never exceed {max}, but InputRange is Byte (0 to 255). ") +
                "For pixels scaled to 0..1 (e.g. ExtractPixels with scaleImage: 1f / 255) set InputRange = PixelRange.Unit.");
        }
    }
}
