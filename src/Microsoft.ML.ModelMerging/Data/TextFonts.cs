using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>The installed (non-symbol) fonts that draw every character a renderer needs, loaded once per rendering.</summary>
internal sealed class TextFonts : IDisposable
{
    private readonly List<SKTypeface> typefaces = [];

    public TextFonts(string fontDirectory, string characters)
    {
        foreach (string file in FontCatalog.Find(fontDirectory))
        {
            var typeface = SKTypeface.FromFile(file);
            if (typeface is not null && characters.All(c => typeface.ContainsGlyph(c))) typefaces.Add(typeface);
            else typeface?.Dispose();
        }

        if (typefaces.Count == 0)
            throw new InvalidOperationException($"No font under '{fontDirectory}' draws all of \"{characters}\": install the font packages of build.sh.");
    }

    public int Count => typefaces.Count;

    public SKTypeface Pick(SeededRandom random) => typefaces[random.NextInt(typefaces.Count)];

    /// <summary>Draws <paramref name="text"/> centred on (<paramref name="cx"/>, <paramref name="cy"/>) with its ink box <paramref name="height"/> pixels tall.</summary>
    public static void DrawCentred(SKCanvas canvas, SKTypeface typeface, string text, float cx, float cy, float height, SKPaint paint, float stretch = 1)
    {
        // Aliased edging and linear metrics are what an SKPaint's font had: FreeType hints the outline for the edging.
        using var outline = new SKFont(typeface, 100) { Edging = SKFontEdging.Alias, LinearMetrics = true };
        using var path = outline.GetTextPath(text, new SKPoint(0, 0));
        SKRect box = path.TightBounds;
        if (box.Height <= 0) return;
        float scale = height / box.Height;
        var matrix = SKMatrix.CreateTranslation(-box.MidX, -box.MidY)
            .PostConcat(SKMatrix.CreateScale(scale * stretch, scale))
            .PostConcat(SKMatrix.CreateTranslation(cx, cy));
        path.Transform(matrix);
        canvas.DrawPath(path, paint);
    }

    public void Dispose()
    {
        foreach (var typeface in typefaces) typeface.Dispose();
    }
}
