using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Simple rendered scenes in the spirit of SUN397: a sky, a horizon and what stands on it (sea and sand, peaks, a skyline,
/// trunks, dunes, snow, stars, a setting sun, flowers, or the walls of a room), each with a random horizon, palette and
/// layout. The class is the kind of place.
/// </summary>
internal static class SceneRenderer
{
    public static readonly IReadOnlyList<string> ClassNames =
        ["beach", "mountains", "city", "woods", "desert", "snowfield", "night-sky", "sunset", "meadow", "room"];

    public static ImageDataset Render(int imagesPerClass, int seed, string name) =>
        ProceduralImages.Render(name, ClassNames, imagesPerClass, seed, Draw);

    private static void Draw(RgbRaster raster, int kind, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        Rgb J(float r, float g, float b, float amount = 0.06f) => ProceduralImages.Jitter(new Rgb(r, g, b), random, amount);
        float horizon = random.NextFloat(11, 20);
        Rgb skyTop = J(0.25f, 0.45f, 0.8f), skyLow = J(0.65f, 0.8f, 0.95f);
        Rgb Sky(float y) => Rgb.Lerp(skyTop, skyLow, Math.Clamp(y / horizon, 0, 1));
        switch (kind)
        {
            case 0: // sky, sea band, sand
            {
                float shore = horizon + random.NextFloat(4, 9);
                Rgb sea = J(0.1f, 0.4f, 0.6f), sand = J(0.88f, 0.8f, 0.6f);
                raster.Fill((x, y) =>
                {
                    if (y < horizon) return Sky(y);
                    float edge = shore + 1.2f * MathF.Sin(x * 0.4f + horizon);
                    if (y < edge) return Rgb.Lerp(sea, Rgb.Lerp(sea, new Rgb(1, 1, 1), 0.6f), y > edge - 1 ? 1 : 0.1f * noise.At(x * 0.6f, y * 2));
                    return sand.Scale(0.9f + 0.15f * noise.At(x * 0.5f, y * 0.5f));
                });
                break;
            }
            case 1: // jagged peaks with snow caps over green slopes
            {
                var ridge = Ridge(random, horizon - 8, horizon + 2, 6);
                Rgb rock = J(0.42f, 0.4f, 0.45f), snow = J(0.95f, 0.95f, 0.97f, 0.03f), slope = J(0.25f, 0.4f, 0.2f);
                float snowLine = horizon - random.NextFloat(2, 5), foot = horizon + random.NextFloat(5, 9);
                raster.Fill((x, y) =>
                {
                    if (y < ridge[(int)x]) return Sky(y);
                    if (y > foot) return slope.Scale(0.85f + 0.3f * noise.At(x * 0.3f, y * 0.3f));
                    return y < snowLine ? snow : rock.Scale(0.8f + 0.4f * noise.At(x * 0.4f, y * 0.4f));
                });
                break;
            }
            case 2: // a skyline of lit buildings over a street
            {
                float ground = horizon + random.NextFloat(8, 12);
                var tops = new float[32];
                var shades = new Rgb[32];
                for (int x = 0; x < 32;)
                {
                    int w = 3 + random.NextInt(5);
                    float top = random.NextFloat(3, ground - 4);
                    Rgb shade = J(0.35f, 0.33f, 0.35f, 0.15f);
                    for (int i = x; i < Math.Min(32, x + w); i++) { tops[i] = top; shades[i] = shade; }
                    x += w;
                }
                Rgb light = J(0.95f, 0.85f, 0.45f);
                raster.Fill((x, y) =>
                {
                    if (y >= ground) return J(0.25f, 0.25f, 0.27f, 0);
                    if (y < tops[(int)x]) return Sky(y);
                    bool window = (int)x % 2 == 1 && (int)y % 3 == 1 && noise.At(x * 3, y * 3) > 0.45f;
                    return window ? light : shades[(int)x];
                });
                break;
            }
            case 3: // trunks under a canopy
            {
                Rgb leaf = J(0.15f, 0.4f, 0.12f), bark = J(0.35f, 0.22f, 0.12f), floor = J(0.3f, 0.25f, 0.15f);
                var trunks = new bool[32];
                for (int t = 0; t < 5 + random.NextInt(4); t++)
                {
                    int x0 = random.NextInt(32), w = 1 + random.NextInt(3);
                    for (int i = x0; i < Math.Min(32, x0 + w); i++) trunks[i] = true;
                }
                float canopy = random.NextFloat(8, 14), ground = random.NextFloat(24, 29);
                raster.Fill((x, y) =>
                {
                    float n = noise.Fractal(x, y, 0.25f, 2);
                    if (y < canopy + 4 * n) return leaf.Scale(0.6f + 0.8f * n);
                    if (y > ground) return floor.Scale(0.8f + 0.4f * n);
                    return trunks[(int)x] ? bark : Rgb.Lerp(leaf.Scale(0.5f), skyLow, 0.25f * n);
                });
                break;
            }
            case 4: // dunes with ripples under a pale sky
            {
                Rgb sand = J(0.85f, 0.6f, 0.3f), shadow = J(0.65f, 0.4f, 0.2f);
                float wave = random.NextFloat(0.15f, 0.3f), phase = random.NextFloat(0, 6.28f);
                skyLow = J(0.9f, 0.88f, 0.8f);
                raster.Fill((x, y) =>
                {
                    float line = horizon + 2.5f * MathF.Sin(wave * x + phase);
                    if (y < line) return Sky(y);
                    float ripple = 0.5f + 0.5f * MathF.Sin(1.6f * y + 0.5f * MathF.Sin(0.3f * x));
                    return Rgb.Lerp(sand, shadow, 0.35f * ripple);
                });
                break;
            }
            case 5: // white ground, grey sky, a few dark firs
            {
                Rgb snow = J(0.92f, 0.94f, 0.97f, 0.04f), grey = J(0.75f, 0.78f, 0.82f);
                var firs = new float[32];
                for (int t = 0; t < random.NextInt(4); t++) firs[random.NextInt(32)] = random.NextFloat(3, 8);
                raster.Fill((x, y) =>
                {
                    if (y < horizon) return firs[(int)x] > horizon - y ? J(0.1f, 0.2f, 0.15f, 0) : grey;
                    return snow.Scale(0.92f + 0.1f * noise.At(x * 0.3f, y * 0.6f));
                });
                break;
            }
            case 6: // stars and a moon over a dark silhouette
            {
                Rgb night = J(0.03f, 0.04f, 0.12f, 0.03f);
                float mx = random.NextFloat(6, 26), my = random.NextFloat(4, horizon - 3), mr = random.NextFloat(2, 3.5f);
                var ridge = Ridge(random, horizon, horizon + 6, 10);
                raster.Fill((x, y) =>
                {
                    if (y >= ridge[(int)x]) return new Rgb(0.01f, 0.01f, 0.02f);
                    if ((x - mx) * (x - mx) + (y - my) * (y - my) < mr * mr) return J(0.95f, 0.93f, 0.8f, 0);
                    return noise.At(x * 2.3f, y * 2.3f) > 0.93f ? new Rgb(0.9f, 0.9f, 0.95f) : night;
                });
                break;
            }
            case 7: // a low sun in an orange sky, mirrored in water
            {
                Rgb high = J(0.45f, 0.2f, 0.45f), low = J(0.98f, 0.55f, 0.2f), sun = J(1f, 0.9f, 0.55f, 0.03f);
                float sx = random.NextFloat(8, 24), sr = random.NextFloat(3, 5);
                raster.Fill((x, y) =>
                {
                    float t = Math.Clamp(y / horizon, 0, 1);
                    if (y < horizon)
                        return (x - sx) * (x - sx) + (y - horizon + 1) * (y - horizon + 1) < sr * sr ? sun : Rgb.Lerp(high, low, t);
                    bool glitter = MathF.Abs(x - sx) < sr * 0.8f && noise.At(x, y * 3) > 0.5f;
                    return glitter ? Rgb.Lerp(low, sun, 0.5f) : Rgb.Lerp(low, high, 0.5f).Scale(0.45f);
                });
                break;
            }
            case 8: // green grass dotted with flowers under a blue sky
            {
                Rgb grass = J(0.3f, 0.6f, 0.2f);
                Rgb[] flowers = [J(0.95f, 0.9f, 0.2f), J(0.95f, 0.95f, 0.95f), J(0.9f, 0.3f, 0.5f)];
                float density = random.NextFloat(0.8f, 0.9f);
                raster.Fill((x, y) =>
                {
                    if (y < horizon) return Sky(y);
                    float n = noise.At(x * 1.7f, y * 1.7f);
                    return n > density ? flowers[(int)(n * 1000) % 3] : grass.Scale(0.8f + 0.3f * noise.At(x * 0.2f, y * 0.2f));
                });
                break;
            }
            default: // a wall with a window over a plank floor
            {
                Rgb wall = ProceduralImages.Colour(random, 0.1f, 0.5f, 0.6f, 0.95f), wood = J(0.55f, 0.38f, 0.22f);
                float floor = random.NextFloat(20, 26);
                raster.Fill((x, y) => y >= floor
                    ? wood.Scale((int)((y - floor) * 1.5f) % 2 == 0 ? 1f : 0.85f)
                    : wall.Scale(0.9f + 0.1f * y / floor));
                float wx = random.NextFloat(3, 16), wy = random.NextFloat(3, 8), ww = random.NextFloat(8, 13), wh = random.NextFloat(7, 11);
                raster.BeginVector();
                using var paint = new SKPaint { IsAntialias = true, Color = J(0.95f, 0.95f, 0.9f, 0.04f).ToSkia() };
                raster.Canvas.DrawRect(wx - 1, wy - 1, ww + 2, wh + 2, paint);
                paint.Color = Sky(wy + 3).ToSkia();
                raster.Canvas.DrawRect(wx, wy, ww, wh, paint);
                paint.Color = J(0.95f, 0.95f, 0.9f, 0.04f).ToSkia();
                raster.Canvas.DrawRect(wx + ww / 2 - 0.5f, wy, 1, wh, paint);
                raster.Composite();
                break;
            }
        }

        raster.AddNoise(random, 0.03f);
    }

    /// <summary>A mountain or hill line: for each column, the first row of the ground, a random walk between two heights.</summary>
    private static float[] Ridge(SeededRandom random, float high, float low, float step)
    {
        var ridge = new float[32];
        float h = random.NextFloat(high, low);
        float slope = random.NextFloat(-1, 1);
        for (int x = 0; x < 32; x++)
        {
            if (random.NextInt(4) == 0) slope = random.NextFloat(-1, 1) * step / 4;
            h = Math.Clamp(h + slope, Math.Max(1, high - step), low);
            ridge[x] = h;
        }

        return ridge;
    }
}
