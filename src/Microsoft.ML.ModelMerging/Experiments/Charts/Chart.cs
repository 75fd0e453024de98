using ScottPlot;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>What every chart shares: the palette, the font, and writing the PNG atomically and deterministically.</summary>
internal static class Chart
{
    // Category10, the palette readers know from matplotlib and most plotting tools; past ten series (a full comparison
    // ranks fourteen methods) the light shades Category20 pairs with them, so no two of twenty series share a colour.
    private static readonly IPalette Palette = new ScottPlot.Palettes.Category10();
    private static readonly IPalette LightShades = new ScottPlot.Palettes.Category20();

    /// <summary>The colour of series <paramref name="index"/>: Category10, then its light shades (repeating after twenty).</summary>
    public static Color Color(int index) => (index % 20) < 10 ? Palette.GetColor(index % 20) : LightShades.GetColor(2 * (index % 20 - 10) + 1);

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
