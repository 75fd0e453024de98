using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Road signs in the manner of GTSRB: ten European sign types (shape, colours and pictogram), drawn at a random size,
/// position, tilt and exposure over a cluttered street background. Text and digits come from the installed fonts;
/// arrows are drawn as paths.
/// </summary>
internal static class TrafficSignRenderer
{
    public static readonly IReadOnlyList<string> ClassNames =
        ["stop", "yield", "no-entry", "speed-limit-30", "speed-limit-80", "ahead-only", "turn-left", "turn-right", "danger", "parking"];

    private static readonly SKColor Red = new(200, 30, 35), Blue = new(25, 75, 170), White = new(245, 245, 245);

    public static ImageDataset Render(int imagesPerClass, int seed, string name, string fontDirectory)
    {
        using var fonts = new TextFonts(fontDirectory, "STOP0380!");
        return ProceduralImages.Render(name, ClassNames, imagesPerClass, seed, (raster, sign, random) => Draw(raster, sign, random, fonts));
    }

    private static void Draw(RgbRaster raster, int sign, SeededRandom random, TextFonts fonts)
    {
        ClutterBackground.Draw(raster, random, 3 + random.NextInt(4));
        float r = random.NextFloat(9.5f, 14.5f);
        float cx = 16 + random.NextFloat(-2.5f, 2.5f), cy = 16 + random.NextFloat(-2.5f, 2.5f);
        float tilt = random.NextFloat(-10, 10), squash = random.NextFloat(0.85f, 1f);
        SKTypeface typeface = fonts.Pick(random);
        raster.BeginVector();
        SKCanvas canvas = raster.Canvas;
        canvas.Save();
        canvas.Translate(cx, cy);
        canvas.RotateDegrees(tilt);
        canvas.Scale(squash, 1);
        using var paint = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Fill };
        void Fill(SKColor colour, Action draw) { paint.Color = colour; draw(); }
        switch (sign)
        {
            case 0:
                using (var octagon = Polygon(8, r, MathF.PI / 8))
                {
                    Fill(White, () => canvas.DrawPath(octagon, paint));
                    using var inner = Polygon(8, r * 0.88f, MathF.PI / 8);
                    Fill(Red, () => canvas.DrawPath(inner, paint));
                }
                Fill(White, () => TextFonts.DrawCentred(canvas, typeface, "STOP", 0, 0, r * 0.45f, paint));
                break;
            case 1:
                using (var triangle = Polygon(3, r, MathF.PI / 2))
                {
                    Fill(Red, () => canvas.DrawPath(triangle, paint));
                    using var inner = Polygon(3, r * 0.6f, MathF.PI / 2);
                    Fill(White, () => canvas.DrawPath(inner, paint));
                }
                break;
            case 2:
                Fill(Red, () => canvas.DrawCircle(0, 0, r, paint));
                Fill(White, () => canvas.DrawRect(-r * 0.65f, -r * 0.17f, r * 1.3f, r * 0.34f, paint));
                break;
            case 3:
            case 4:
                Fill(Red, () => canvas.DrawCircle(0, 0, r, paint));
                Fill(White, () => canvas.DrawCircle(0, 0, r * 0.78f, paint));
                Fill(SKColors.Black, () => TextFonts.DrawCentred(canvas, typeface, sign == 3 ? "30" : "80", 0, 0, r * 0.75f, paint));
                break;
            case 5:
            case 6:
            case 7:
                Fill(Blue, () => canvas.DrawCircle(0, 0, r, paint));
                canvas.RotateDegrees(sign == 5 ? 0 : sign == 6 ? -90 : 90);
                using (var arrow = Arrow(r))
                    Fill(White, () => canvas.DrawPath(arrow, paint));
                break;
            case 8:
                using (var triangle = Polygon(3, r, -MathF.PI / 2))
                {
                    Fill(Red, () => canvas.DrawPath(triangle, paint));
                    using var inner = Polygon(3, r * 0.68f, -MathF.PI / 2);
                    Fill(White, () => canvas.DrawPath(inner, paint));
                }
                Fill(SKColors.Black, () => TextFonts.DrawCentred(canvas, typeface, "!", 0, r * 0.12f, r * 0.5f, paint));
                break;
            default:
                Fill(White, () => canvas.DrawRoundRect(-r * 0.85f, -r * 0.85f, r * 1.7f, r * 1.7f, r * 0.15f, r * 0.15f, paint));
                Fill(Blue, () => canvas.DrawRoundRect(-r * 0.75f, -r * 0.75f, r * 1.5f, r * 1.5f, r * 0.1f, r * 0.1f, paint));
                Fill(White, () => TextFonts.DrawCentred(canvas, typeface, "P", 0, 0, r * 1.0f, paint));
                break;
        }

        canvas.Restore();
        raster.Composite();
        ClutterBackground.Expose(raster, random.NextFloat(0.55f, 1.25f));
        raster.AddNoise(random, 0.04f);
    }

    /// <summary>A regular polygon of circumradius <paramref name="r"/> about the origin, first vertex at angle <paramref name="start"/>.</summary>
    private static SKPath Polygon(int sides, float r, float start)
    {
        var path = new SKPath();
        for (int i = 0; i < sides; i++)
        {
            float a = start + 2 * MathF.PI * i / sides;
            var point = new SKPoint(r * MathF.Cos(a), r * MathF.Sin(a));
            if (i == 0) path.MoveTo(point); else path.LineTo(point);
        }

        path.Close();
        return path;
    }

    /// <summary>An upward arrow (shaft and head) inside a circle of radius <paramref name="r"/>.</summary>
    private static SKPath Arrow(float r)
    {
        var path = new SKPath();
        float shaft = r * 0.16f, head = r * 0.45f;
        path.MoveTo(0, -r * 0.7f);
        path.LineTo(head, -r * 0.15f);
        path.LineTo(shaft, -r * 0.15f);
        path.LineTo(shaft, r * 0.65f);
        path.LineTo(-shaft, r * 0.65f);
        path.LineTo(-shaft, -r * 0.15f);
        path.LineTo(-head, -r * 0.15f);
        path.Close();
        return path;
    }
}
