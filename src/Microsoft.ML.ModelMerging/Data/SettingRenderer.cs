namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Photographic settings for the pre-training corpus: a glyph of the pre-training vocabulary shown in one of twelve
/// settings (written on paper, on a street plate, on a sign, as a studio object, seen from the air, on an LED display, in
/// a landscape, embroidered, chalked, in neon, on a blueprint, halftone-printed). The class is the setting, not the glyph.
/// CLIP's web corpus shows things in many such settings and its captions name them ("a satellite photo of", "a drawing
/// of"), so its image tower keeps what tells a domain apart; a corpus of glyph classes alone teaches the backbone to ignore
/// the ground. No setting carries a benchmark label: the contents are the vocabulary's glyphs.
/// </summary>
internal static class SettingRenderer
{
    public static readonly IReadOnlyList<string> Names =
        ["paper", "street-plate", "sign", "studio", "aerial", "led-display", "landscape", "embroidery", "chalkboard", "neon", "blueprint", "halftone"];

    /// <summary>Draws <paramref name="glyph"/> (32×32 alpha, 1 = ink) in setting <paramref name="setting"/>.</summary>
    public static void Draw(RgbRaster raster, int setting, float[] glyph, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        switch (setting)
        {
            case 0: Paper(raster, glyph, random, noise); break;
            case 1: StreetPlate(raster, glyph, random); break;
            case 2: Sign(raster, glyph, random); break;
            case 3: Studio(raster, glyph, random); break;
            case 4: Aerial(raster, glyph, random, noise); break;
            case 5: LedDisplay(raster, glyph, random); break;
            case 6: Landscape(raster, glyph, random, noise); break;
            case 7: Embroidery(raster, glyph, random); break;
            case 8: Chalkboard(raster, glyph, random, noise); break;
            case 9: Neon(raster, glyph, random); break;
            case 10: Blueprint(raster, glyph, random); break;
            default: Halftone(raster, glyph, random); break;
        }

        raster.AddNoise(random, 0.02f);
    }

    private static void Paper(RgbRaster raster, float[] glyph, SeededRandom random, ValueNoise noise)
    {
        Rgb paper = Rgb.FromHsv(random.NextFloat(0.05f, 0.65f), random.NextFloat(0f, 0.2f), random.NextFloat(0.8f, 1f));
        Rgb rule = Rgb.FromHsv(random.NextFloat(0.55f, 0.65f), 0.4f, 0.85f);
        float pitch = random.NextFloat(4.5f, 8), phase = random.NextFloat(0, 8);
        bool ruled = random.NextInt(2) == 0;
        raster.Fill((x, y) =>
        {
            Rgb p = paper.Scale(0.93f + 0.09f * noise.Fractal(x, y, 0.6f, 2));
            return ruled && ProceduralImages.Fract((y + phase) / pitch) < 1 / pitch ? Rgb.Lerp(p, rule, 0.6f) : p;
        });
        ImageStyler.Stamp(raster, glyph, 0, 0, Rgb.FromHsv(random.NextFloat(0.55f, 0.75f), random.NextFloat(0.3f, 0.9f), random.NextFloat(0.05f, 0.5f)), 0.9f);
    }

    private static void StreetPlate(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        ClutterBackground.Draw(raster, random, 3 + random.NextInt(4));
        float[] small = Small(glyph);
        int x0 = random.NextInt(12), y0 = random.NextInt(12);
        Rgb plate = ProceduralImages.Colour(random, 0f, 0.6f, 0.1f, 1f);
        Rgb ink = ProceduralImages.Luma(plate) > 0.5f ? ProceduralImages.Colour(random, 0f, 1f, 0f, 0.3f) : ProceduralImages.Colour(random, 0f, 0.3f, 0.8f, 1f);
        FillRect(raster, x0, y0, 20, 18, plate);
        ImageStyler.Stamp(raster, small, x0 + 2, y0 + 1, ink, 1);
    }

    private static void Sign(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        ClutterBackground.Draw(raster, random, 2 + random.NextInt(3));
        Rgb face = ProceduralImages.Colour(random, 0.7f, 1f, 0.6f, 1f), rim = new(0.95f, 0.95f, 0.95f);
        float cx = 16 + random.NextFloat(-2, 2), cy = 16 + random.NextFloat(-2, 2), r = random.NextFloat(11, 14.5f);
        bool diamond = random.NextInt(2) == 0;
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
            {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
                float d = diamond ? MathF.Abs(dx) + MathF.Abs(dy) : MathF.Sqrt(dx * dx + dy * dy);
                if (d < r) raster.Set(x, y, d > r * 0.85f ? rim : face);
            }

        ImageStyler.Stamp(raster, Small(glyph), (int)cx - 8, (int)cy - 8, ProceduralImages.Luma(face) > 0.5f ? new Rgb(0.05f, 0.05f, 0.05f) : rim, 1);
    }

    private static void Studio(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb top = ProceduralImages.Colour(random, 0f, 0.5f, 0.4f, 0.95f), bottom = ProceduralImages.Jitter(top, random, 0.2f);
        raster.Fill((x, y) => Rgb.Lerp(top, bottom, y / 32f).Scale(1.05f - 0.4f * ((x - 16) * (x - 16) + (y - 16) * (y - 16)) / 512f));
        Rgb dye = ProceduralImages.Colour(random, 0.3f, 1f, 0.3f, 1f);
        // A soft object: the glyph's body lit from the top left, its shadow offset to the bottom right.
        ImageStyler.Stamp(raster, glyph, 2, 2, new Rgb(0, 0, 0), 0.3f);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                raster.Blend(x, y, dye.Scale(1.2f - (x + y) / 80f), glyph[y * 32 + x]);
    }

    private static void Aerial(RgbRaster raster, float[] glyph, SeededRandom random, ValueNoise noise)
    {
        Rgb[] fields = [new(0.45f, 0.5f, 0.25f), new(0.6f, 0.55f, 0.35f), new(0.3f, 0.42f, 0.2f), new(0.5f, 0.42f, 0.3f)];
        float size = random.NextFloat(7, 13), angle = random.NextFloat(0, MathF.PI), cos = MathF.Cos(angle), sin = MathF.Sin(angle);
        raster.Fill((x, y) =>
        {
            float u = cos * x + sin * y + 50, v = -sin * x + cos * y + 50;
            Rgb field = fields[((int)(u / size) * 3 + (int)(v / size) * 5) & 3];
            return field.Scale(0.85f + 0.3f * noise.Fractal(x, y, 0.3f, 2));
        });
        ImageStyler.Stamp(raster, glyph, 0, 0, ProceduralImages.Jitter(new Rgb(0.62f, 0.6f, 0.58f), random, 0.1f), 0.95f);
    }

    private static void LedDisplay(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb panel = ProceduralImages.Colour(random, 0f, 0.4f, 0.02f, 0.12f);
        Rgb led = Rgb.FromHsv(random.NextFloat(0, 1), random.NextFloat(0.2f, 0.9f), 1f);
        float[] grid = Small(glyph);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
            {
                // Each 2×2 cell is one LED: lit in proportion to the glyph, unlit ones faintly visible, a dark gap at the corner.
                Rgb c = Rgb.Lerp(Rgb.Lerp(panel, led, 0.1f), led, grid[y / 2 * 16 + x / 2] > 0.35f ? 1 : 0);
                raster.Set(x, y, x % 2 == 1 && y % 2 == 1 ? Rgb.Lerp(panel, c, 0.4f) : c);
            }
    }

    private static void Landscape(RgbRaster raster, float[] glyph, SeededRandom random, ValueNoise noise)
    {
        float horizon = random.NextFloat(16, 24);
        Rgb sky = Rgb.FromHsv(random.NextFloat(0.5f, 0.65f), random.NextFloat(0.2f, 0.6f), random.NextFloat(0.7f, 1f));
        Rgb haze = Rgb.Lerp(sky, new Rgb(1, 0.95f, 0.85f), 0.5f);
        Rgb ground = Rgb.FromHsv(random.NextFloat(0.08f, 0.35f), random.NextFloat(0.3f, 0.7f), random.NextFloat(0.25f, 0.6f));
        raster.Fill((x, y) => y < horizon ? Rgb.Lerp(sky, haze, y / horizon) : ground.Scale(0.8f + 0.4f * noise.Fractal(x, y, 0.25f)));
        // The glyph stands on the horizon as a dark silhouette.
        ImageStyler.Stamp(raster, Small(glyph), random.NextInt(16), (int)horizon - 15, ground.Scale(0.3f), 1);
    }

    private static void Embroidery(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb warp = ProceduralImages.Colour(random, 0.1f, 0.6f, 0.4f, 0.9f), weft = ProceduralImages.Jitter(warp, random, 0.15f);
        Rgb thread = ProceduralImages.Colour(random, 0.6f, 1f, 0.5f, 1f);
        raster.Fill((x, y) => ((int)x + (int)y) % 2 == 0 ? warp : weft);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                raster.Blend(x, y, thread.Scale((x + 2 * y) % 4 < 2 ? 1f : 0.75f), glyph[y * 32 + x] > 0.4f ? 1 : 0);
    }

    private static void Chalkboard(RgbRaster raster, float[] glyph, SeededRandom random, ValueNoise noise)
    {
        Rgb board = Rgb.FromHsv(random.NextFloat(0.3f, 0.5f), random.NextFloat(0.2f, 0.6f), random.NextFloat(0.12f, 0.3f));
        raster.Fill((x, y) => Rgb.Lerp(board, new Rgb(0.8f, 0.8f, 0.8f), 0.15f * noise.Fractal(x, y, 0.08f)));
        Rgb chalk = ProceduralImages.Jitter(new Rgb(0.92f, 0.92f, 0.88f), random, 0.06f);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                raster.Blend(x, y, chalk, glyph[y * 32 + x] * (random.NextFloat(0, 1) < 0.25f ? 0.3f : 0.9f));
    }

    private static void Neon(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb wall = ProceduralImages.Colour(random, 0f, 0.5f, 0.02f, 0.12f);
        Rgb tube = Rgb.FromHsv(random.NextFloat(0, 1), 0.9f, 1f);
        raster.Fill((_, _) => wall);
        // A halo: the glyph spread over its neighbours at low opacity, then the bright tube.
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++)
                if (dx != 0 || dy != 0) ImageStyler.Stamp(raster, glyph, dx, dy, tube, 0.08f);
        ImageStyler.Stamp(raster, glyph, 0, 0, Rgb.Lerp(tube, new Rgb(1, 1, 1), 0.6f), 1);
    }

    private static void Blueprint(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb paper = Rgb.FromHsv(random.NextFloat(0.58f, 0.66f), random.NextFloat(0.6f, 0.9f), random.NextFloat(0.4f, 0.65f));
        Rgb line = new(0.85f, 0.9f, 1f);
        int pitch = 4 + random.NextInt(3);
        raster.Fill((x, y) => (int)x % pitch == 0 || (int)y % pitch == 0 ? Rgb.Lerp(paper, line, 0.25f) : paper);
        // Only the glyph's outline: where its alpha changes between neighbours.
        for (int y = 1; y < 31; y++)
            for (int x = 1; x < 31; x++)
            {
                float edge = MathF.Abs(glyph[y * 32 + x + 1] - glyph[y * 32 + x - 1]) + MathF.Abs(glyph[(y + 1) * 32 + x] - glyph[(y - 1) * 32 + x]);
                raster.Blend(x, y, line, Math.Clamp(edge, 0, 1));
            }
    }

    private static void Halftone(RgbRaster raster, float[] glyph, SeededRandom random)
    {
        Rgb paper = new(0.96f, 0.95f, 0.9f), tint = ProceduralImages.Colour(random, 0.5f, 1f, 0.6f, 1f), ink = ProceduralImages.Colour(random, 0.3f, 1f, 0f, 0.35f);
        float level = random.NextFloat(0.2f, 0.5f);
        raster.Fill((x, y) =>
        {
            // Dots on a 45° grid of pitch 3: the tint's dots everywhere, the ink's dots (larger) inside the glyph.
            float u = ProceduralImages.Fract((x + y) / 3f) - 0.5f, v = ProceduralImages.Fract((x - y) / 3f) - 0.5f;
            float d = u * u + v * v, a = glyph[(int)y * 32 + (int)x];
            return d < 0.5f * a ? ink : d < level * 0.25f ? tint : paper;
        });
    }

    private static void FillRect(RgbRaster raster, int x0, int y0, int width, int height, Rgb colour)
    {
        for (int y = y0; y < Math.Min(32, y0 + height); y++)
            for (int x = x0; x < Math.Min(32, x0 + width); x++) raster.Set(x, y, colour);
    }

    private static readonly BilinearResampler Half = new(32, 32, 16, 16);

    /// <summary>A 32×32 alpha at 16×16 (each value the mean of a 2×2 block), for glyphs drawn small inside a setting.</summary>
    private static float[] Small(float[] glyph)
    {
        var result = new float[16 * 16];
        Half.Resize(glyph, result);
        return result;
    }
}
