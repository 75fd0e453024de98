using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Cluttered outdoor backgrounds for the street tasks: a blotchy field in a few random colours (foliage, walls, sky)
/// crossed by random bars and blocks, the way photographs of signs and house fronts have other things around them.
/// </summary>
internal static class ClutterBackground
{
    public static void Draw(RgbRaster raster, SeededRandom random, int blocks)
    {
        var noise = new ValueNoise(random);
        Rgb a = ProceduralImages.Colour(random, 0.1f, 0.7f, 0.2f, 0.9f), b = ProceduralImages.Colour(random, 0.1f, 0.7f, 0.2f, 0.9f);
        float scale = random.NextFloat(0.08f, 0.25f);
        raster.Fill((x, y) => Rgb.Lerp(a, b, noise.Fractal(x, y, scale, 3)));
        raster.BeginVector();
        using var paint = new SKPaint { IsAntialias = true };
        for (int i = 0; i < blocks; i++)
        {
            paint.Color = ProceduralImages.Colour(random, 0f, 0.8f, 0.15f, 0.95f).ToSkia().WithAlpha((byte)random.NextInt(200));
            float x = random.NextFloat(-8, 32), y = random.NextFloat(-8, 32);
            if (random.NextInt(2) == 0)
                raster.Canvas.DrawRect(x, y, random.NextFloat(3, 16), random.NextFloat(3, 16), paint);
            else
                raster.Canvas.DrawLine(x, y, random.NextFloat(-8, 40), random.NextFloat(-8, 40), paint.WithStroke(random.NextFloat(0.7f, 2.5f)));
            paint.Style = SKPaintStyle.Fill;
        }

        raster.Composite();
    }

    private static SKPaint WithStroke(this SKPaint paint, float width)
    {
        paint.Style = SKPaintStyle.Stroke;
        paint.StrokeWidth = width;
        return paint;
    }

    /// <summary>Darkens or brightens the whole image, as exposure does.</summary>
    public static void Expose(RgbRaster raster, float factor)
    {
        for (int i = 0; i < raster.Pixels.Length; i++) raster.Pixels[i] = Math.Clamp(raster.Pixels[i] * factor, 0, 1);
    }
}
