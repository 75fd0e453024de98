using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Street-number plates in the manner of SVHN: a two-digit house number in a random font and colour on a plate (or
/// painted straight on the wall) in front of cluttered colour. The ten classes are ten house numbers, so this task's label
/// space is not the single digits of the handwriting task.
/// </summary>
internal static class HouseNumberRenderer
{
    public static readonly IReadOnlyList<string> ClassNames = ["12", "25", "37", "40", "58", "63", "71", "86", "94", "09"];

    public static ImageDataset Render(int imagesPerClass, int seed, string name, string fontDirectory)
    {
        using var fonts = new TextFonts(fontDirectory, "0123456789");
        return ProceduralImages.Render(name, ClassNames, imagesPerClass, seed, (raster, number, random) => Draw(raster, number, random, fonts));
    }

    private static void Draw(RgbRaster raster, int number, SeededRandom random, TextFonts fonts)
    {
        ClutterBackground.Draw(raster, random, 2 + random.NextInt(5));
        Rgb plate = ProceduralImages.Colour(random, 0f, 0.9f, 0.1f, 1f);
        // Digits contrast with the plate: light on dark or dark on light, in any hue.
        Rgb ink = ProceduralImages.Luma(plate) > 0.5f
            ? ProceduralImages.Colour(random, 0f, 1f, 0f, 0.35f)
            : ProceduralImages.Colour(random, 0f, 0.6f, 0.75f, 1f);
        float height = random.NextFloat(12, 20), stretch = random.NextFloat(0.8f, 1.25f);
        float cx = 16 + random.NextFloat(-2, 2), cy = 16 + random.NextFloat(-2, 2);
        raster.BeginVector();
        SKCanvas canvas = raster.Canvas;
        canvas.Save();
        canvas.Translate(cx, cy);
        canvas.RotateDegrees(random.NextFloat(-8, 8));
        using var paint = new SKPaint { IsAntialias = true, Color = plate.ToSkia() };
        if (random.NextInt(4) > 0)
        {
            float w = height * 1.3f * stretch + random.NextFloat(3, 8), h = height + random.NextFloat(3, 7);
            canvas.DrawRoundRect(-w / 2, -h / 2, w, h, random.NextFloat(0, 3), random.NextFloat(0, 3), paint);
        }

        paint.Color = ink.ToSkia();
        TextFonts.DrawCentred(canvas, fonts.Pick(random), ClassNames[number], 0, 0, height, paint, stretch);
        canvas.Restore();
        raster.Composite();
        ClutterBackground.Expose(raster, random.NextFloat(0.6f, 1.2f));
        raster.AddNoise(random, 0.04f);
    }
}
