using ScottPlot;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>What every chart shares: the palette, the font, and writing the PNG atomically and deterministically.</summary>
internal static class Chart
{
    // Category10, the palette readers know from matplotlib and most plotting tools.
    private static readonly IPalette Palette = new ScottPlot.Palettes.Category10();

    /// <summary>The palette's colour for series <paramref name="index"/> (repeating after ten).</summary>
    public static Color Color(int index) => Palette.GetColor(index);

    /// <summary>The width in pixels of <paramref name="text"/> drawn in the chart font at <paramref name="size"/> pixels.</summary>
    public static float TextWidth(string text, float size, bool bold = false)
    {
        using var font = new SkiaSharp.SKFont(Fonts.GetTypeface(ChartFonts.Name ?? Fonts.Default, bold, italic: false), size);
        return font.MeasureText(text);
    }

    /// <summary>
    /// Renders <paramref name="plot"/> at <paramref name="width"/>×<paramref name="height"/> pixels, every text in the chart
    /// font, and writes the PNG under a temporary name renamed into place, so a cancelled run leaves no half file; returns
    /// the path.
    /// </summary>
    public static string SavePng(Plot plot, int width, int height, string path)
    {
        ArgumentNullException.ThrowIfNull(plot);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (ChartFonts.Name is { } font)
        {
            plot.Axes.Title.Label.FontName = font;
            foreach (var axis in plot.Axes.GetAxes())
            {
                axis.Label.FontName = font;
                axis.TickLabelStyle.FontName = font;
            }

            plot.Legend.FontName = font;
            foreach (var text in plot.GetPlottables<ScottPlot.Plottables.Text>()) text.LabelStyle.FontName = font;
        }

        byte[] png = plot.GetImageBytes(width, height, ImageFormat.Png);
        string temp = path + ".partial.png";
        File.WriteAllBytes(temp, png);
        File.Move(temp, path, overwrite: true);
        return path;
    }
}
