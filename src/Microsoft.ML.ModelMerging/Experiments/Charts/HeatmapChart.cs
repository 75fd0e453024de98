using System.Globalization;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>
/// A square matrix with labelled rows and columns as a PNG heatmap, each cell annotated with its value: e.g. the cosine
/// similarity of the task vectors of a pool. Values in [−1, 1]: white at 0, blue towards 1, red towards −1.
/// </summary>
internal static class HeatmapChart
{
    /// <summary>Draws <paramref name="values"/> (n×n, labelled by <paramref name="labels"/>) and writes the PNG atomically; returns the path.</summary>
    public static string Save(string path, string title, IReadOnlyList<string> labels, double[,] values)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(values);
        int n = labels.Count;
        if (values.GetLength(0) != n || values.GetLength(1) != n)
            throw new ArgumentException($"A {values.GetLength(0)}×{values.GetLength(1)} matrix for {n} labels.");
        const int cell = 64, top = 60, bottom = 30;
        using var typeface = ChartCanvas.LoadTypeface();
        using var font = new SKFont(typeface, 13) { LinearMetrics = true };
        using var text = new SKPaint { IsAntialias = true, Color = SKColors.Black };
        float left = labels.Select(l => font.MeasureText(l)).DefaultIfEmpty(0).Max() + 20;
        int width = (int)left + n * cell + 30, height = top + n * cell + bottom + (int)left;
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(SKColors.White);
        using (var bold = new SKFont(typeface, 16) { Embolden = true, LinearMetrics = true })
            canvas.DrawText(title, Math.Max(10, (width - bold.MeasureText(title)) / 2), 30, bold, text);
        for (int i = 0; i < n; i++)
        {
            canvas.DrawText(labels[i], left - 10 - font.MeasureText(labels[i]), top + i * cell + cell / 2 + 5, font, text);
            canvas.Save();
            canvas.Translate(left + i * cell + cell / 2 + 5, top + n * cell + 10);
            canvas.RotateDegrees(90);
            canvas.DrawText(labels[i], 0, 0, font, text);
            canvas.Restore();
            for (int j = 0; j < n; j++)
            {
                double v = Math.Clamp(values[i, j], -1, 1);
                var color = v >= 0
                    ? new SKColor((byte)(255 - 222 * v), (byte)(255 - 153 * v), (byte)(255 - 75 * v))
                    : new SKColor((byte)(255 + 41 * v), (byte)(255 + 216 * v), (byte)(255 + 216 * v));
                using var fill = new SKPaint { Color = color };
                var rect = SKRect.Create(left + j * cell, top + i * cell, cell, cell);
                canvas.DrawRect(rect, fill);
                string label = values[i, j].ToString("F2", CultureInfo.InvariantCulture);
                using var valueText = new SKPaint { IsAntialias = true, Color = Math.Abs(v) > 0.6 ? SKColors.White : SKColors.Black };
                canvas.DrawText(label, rect.MidX - font.MeasureText(label) / 2, rect.MidY + 5, font, valueText);
            }
        }
        using (var frame = new SKPaint { Color = SKColors.Black, Style = SKPaintStyle.Stroke, StrokeWidth = 1 })
            canvas.DrawRect(SKRect.Create(left, top, n * cell, n * cell), frame);
        canvas.Flush();
        return ChartCanvas.SavePng(bitmap, path);
    }
}
