using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>
/// A PNG chart with one plot area: title, axis labels, numeric or labelled ticks, grid lines and a legend, drawn with
/// SkiaSharp, the one that ML.NET's ImageAnalytics ships with.
/// </summary>
internal sealed class ChartCanvas : IDisposable
{
    // Category10, the palette readers know from matplotlib and most plotting tools.
    private static readonly SKColor[] Palette =
    [
        new(0x1f, 0x77, 0xb4), new(0xff, 0x7f, 0x0e), new(0x2c, 0xa0, 0x2c), new(0xd6, 0x27, 0x28), new(0x94, 0x67, 0xbd),
        new(0x8c, 0x56, 0x4b), new(0xe3, 0x77, 0xc2), new(0x7f, 0x7f, 0x7f), new(0xbc, 0xbd, 0x22), new(0x17, 0xbe, 0xcf),
    ];

    private readonly SKBitmap bitmap;
    private readonly SKCanvas canvas;
    private readonly SKTypeface typeface;
    private readonly SKFont font;
    private readonly SKPaint text;
    private readonly SKRect area;
    private readonly (double Min, double Max) xRange;
    private readonly (double Min, double Max) yRange;

    /// <param name="width">Image width in pixels.</param>
    /// <param name="height">Image height in pixels.</param>
    /// <param name="x">Data range of the horizontal axis.</param>
    /// <param name="y">Data range of the vertical axis.</param>
    /// <param name="legendWidth">Pixels kept free right of the plot area for the legend.</param>
    public ChartCanvas(int width, int height, (double Min, double Max) x, (double Min, double Max) y, int legendWidth)
    {
        bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        canvas = new SKCanvas(bitmap);
        canvas.Clear(SKColors.White);
        typeface = LoadTypeface();
        font = new SKFont(typeface, 13) { LinearMetrics = true };
        text = new SKPaint { IsAntialias = true, Color = SKColors.Black };
        area = new SKRect(70, 45, width - 20 - legendWidth, height - 70);
        xRange = x;
        yRange = y;
    }

    public static SKColor Color(int index) => Palette[index % Palette.Length];

    public float X(double value) => area.Left + (float)((value - xRange.Min) / (xRange.Max - xRange.Min)) * area.Width;

    public float Y(double value) => area.Bottom - (float)((value - yRange.Min) / (yRange.Max - yRange.Min)) * area.Height;

    public void Title(string title, string xLabel, string yLabel)
    {
        using var bold = new SKFont(typeface, 16) { Embolden = true, LinearMetrics = true };
        canvas.DrawText(title, (area.Left + area.Right - bold.MeasureText(title)) / 2, 28, bold, text);
        canvas.DrawText(xLabel, (area.Left + area.Right - font.MeasureText(xLabel)) / 2, bitmap.Height - 18, font, text);
        canvas.Save();
        canvas.RotateDegrees(-90);
        canvas.DrawText(yLabel, -(area.Top + area.Bottom + font.MeasureText(yLabel)) / 2, 22, font, text);
        canvas.Restore();
    }

    /// <summary>Grid lines and labels at "nice" steps of the y range.</summary>
    public void NumericYAxis() => NumericAxis(vertical: true);

    public void NumericXAxis() => NumericAxis(vertical: false);

    /// <summary>Category labels under the x axis at the given positions.</summary>
    public void CategoryXAxis(IReadOnlyList<double> positions, IReadOnlyList<string> labels)
    {
        for (int i = 0; i < positions.Count; i++)
        {
            float width = font.MeasureText(labels[i]);
            canvas.DrawText(labels[i], X(positions[i]) - width / 2, area.Bottom + 20, font, text);
        }
    }

    public void Bar(double center, double width, double value, SKColor color)
    {
        using var paint = new SKPaint { Color = color, IsAntialias = true };
        canvas.DrawRect(SKRect.Create(X(center - width / 2), Y(value), X(center + width / 2) - X(center - width / 2), Y(yRange.Min) - Y(value)), paint);
    }

    public void Marker(double x, double y, SKColor color)
    {
        using var paint = new SKPaint { Color = color, IsAntialias = true };
        canvas.DrawCircle(X(x), Y(y), 6, paint);
    }

    /// <summary>A framed legend right of the plot area (or inside it, bottom right, when no room was kept).</summary>
    public void Legend(IReadOnlyList<(string Label, SKColor Color)> items)
    {
        if (items.Count == 0) return;
        float rowHeight = 18, boxWidth = items.Max(i => font.MeasureText(i.Label)) + 34, boxHeight = items.Count * rowHeight + 10;
        bool outside = bitmap.Width - area.Right - 20 >= boxWidth;
        float left = outside ? area.Right + 12 : area.Right - boxWidth - 8;
        float top = outside ? area.Top : area.Bottom - boxHeight - 8;
        using var frame = new SKPaint { Color = new SKColor(0x99, 0x99, 0x99), Style = SKPaintStyle.Stroke, StrokeWidth = 1 };
        using var fill = new SKPaint { Color = SKColors.White.WithAlpha(230) };
        canvas.DrawRect(SKRect.Create(left, top, boxWidth, boxHeight), fill);
        canvas.DrawRect(SKRect.Create(left, top, boxWidth, boxHeight), frame);
        for (int i = 0; i < items.Count; i++)
        {
            float y = top + 5 + i * rowHeight;
            using var swatch = new SKPaint { Color = items[i].Color };
            canvas.DrawRect(SKRect.Create(left + 8, y + 3, 16, 11), swatch);
            canvas.DrawText(items[i].Label, left + 30, y + 13, font, text);
        }
    }

    /// <summary>Writes the PNG to a temporary name and renames it, so a cancelled run leaves no half file.</summary>
    public string Save(string path)
    {
        using var frame = new SKPaint { Color = SKColors.Black, Style = SKPaintStyle.Stroke, StrokeWidth = 1 };
        canvas.DrawRect(area, frame);
        canvas.Flush();
        return SavePng(bitmap, path);
    }

    /// <summary>Encodes <paramref name="bitmap"/> as PNG under a temporary name renamed into place; returns the path.</summary>
    public static string SavePng(SKBitmap bitmap, string path)
    {
        string temp = path + ".partial.png";
        using (var image = SKImage.FromBitmap(bitmap))
        using (var data = image.Encode(SKEncodedImageFormat.Png, 100))
        using (var file = File.Create(temp))
        {
            data.SaveTo(file);
        }

        File.Move(temp, path, overwrite: true);
        return path;
    }

    public void Dispose()
    {
        text.Dispose();
        font.Dispose();
        typeface.Dispose();
        canvas.Dispose();
        bitmap.Dispose();
    }

    /// <summary>1, 2 or 5 times a power of ten, giving about <paramref name="target"/> steps over <paramref name="span"/>.</summary>
    internal static double NiceStep(double span, int target = 6)
    {
        if (!(span > 0) || !double.IsFinite(span)) return 1;
        double raw = span / target, power = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double fraction = raw / power;
        return power * (fraction < 1.5 ? 1 : fraction < 3.5 ? 2 : fraction < 7.5 ? 5 : 10);
    }

    /// <summary>A range around <paramref name="values"/> with <paramref name="margin"/> of its span added on each side.</summary>
    internal static (double Min, double Max) Padded(IEnumerable<double> values, double margin)
    {
        double min = values.Min(), max = values.Max();
        double span = max - min;
        double pad = span > 0 ? span * margin : Math.Max(Math.Abs(max) * margin, 1);
        return (min - pad, max + pad);
    }

    private void NumericAxis(bool vertical)
    {
        var (min, max) = vertical ? yRange : xRange;
        double step = NiceStep(max - min);
        using var grid = new SKPaint { Color = new SKColor(0xe0, 0xe0, 0xe0), StrokeWidth = 1 };
        for (double value = Math.Ceiling(min / step) * step; value <= max + step * 1e-9; value += step)
        {
            string label = Math.Round(value, 10).ToString("G6", System.Globalization.CultureInfo.InvariantCulture);
            if (vertical)
            {
                canvas.DrawLine(area.Left, Y(value), area.Right, Y(value), grid);
                canvas.DrawText(label, area.Left - 8 - font.MeasureText(label), Y(value) + 4, font, text);
            }
            else
            {
                canvas.DrawLine(X(value), area.Top, X(value), area.Bottom, grid);
                canvas.DrawText(label, X(value) - font.MeasureText(label) / 2, area.Bottom + 20, font, text);
            }
        }
    }

    // The NoDependencies build of Skia has no fontconfig, so the default typeface may have no glyphs: load a font file.
    internal static SKTypeface LoadTypeface()
    {
        string[] candidates =
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
            @"C:\Windows\Fonts\segoeui.ttf",
            @"C:\Windows\Fonts\arial.ttf",
        ];
        foreach (string file in candidates)
        {
            if (File.Exists(file) && SKTypeface.FromFile(file) is { } typeface) return typeface;
        }

        return SKTypeface.FromFamilyName("sans-serif") ?? SKTypeface.Default;
    }
}
