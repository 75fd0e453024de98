namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Land-use tiles seen from above, after EuroSAT's ten classes: fields, forest, water, roads and buildings drawn from
/// seeded value noise, bands and lattices, with per-image shifts of palette, scale and orientation.
/// </summary>
internal static class SatelliteTileRenderer
{
    public static readonly IReadOnlyList<string> ClassNames =
        ["annual-crop", "forest", "herbaceous-vegetation", "highway", "industrial", "pasture", "permanent-crop", "residential", "river", "sea-lake"];

    public static ImageDataset Render(int imagesPerClass, int seed, string name) =>
        ProceduralImages.Render(name, ClassNames, imagesPerClass, seed, Draw);

    private static void Draw(RgbRaster raster, int kind, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        float angle = random.NextFloat(0, MathF.PI), cos = MathF.Cos(angle), sin = MathF.Sin(angle);
        float offset = random.NextFloat(-6, 6);
        Rgb J(float r, float g, float b, float amount = 0.05f) => ProceduralImages.Jitter(new Rgb(r, g, b), random, amount);
        Rgb soil = J(0.45f, 0.38f, 0.28f), grass = J(0.35f, 0.5f, 0.22f), water = J(0.08f, 0.2f, 0.32f, 0.04f);
        Rgb Land(float x, float y) => Rgb.Lerp(grass, soil, noise.Fractal(x, y, 0.12f));
        switch (kind)
        {
            case 0: // patchwork of fields with ploughed rows
            {
                Rgb[] crops = [J(0.75f, 0.65f, 0.35f), J(0.4f, 0.55f, 0.2f), J(0.55f, 0.42f, 0.3f), J(0.6f, 0.62f, 0.3f)];
                float rows = random.NextFloat(2.5f, 4f), field = random.NextFloat(10, 16);
                raster.Fill((x, y) =>
                {
                    float u = cos * x + sin * y, v = -sin * x + cos * y;
                    int cell = ((int)MathF.Floor((u + 40) / field) * 7 + (int)MathF.Floor((v + 40) / field) * 13) & 3;
                    float stripe = 0.85f + 0.15f * MathF.Sin(2 * MathF.PI * v / rows);
                    return crops[cell].Scale(stripe);
                });
                break;
            }
            case 1: // dense canopy: dark greens, crowns a few pixels wide
            {
                Rgb dark = J(0.06f, 0.18f, 0.07f), light = J(0.18f, 0.35f, 0.14f);
                float scale = random.NextFloat(0.3f, 0.5f);
                raster.Fill((x, y) => Rgb.Lerp(dark, light, noise.Fractal(x, y, scale, 2)));
                break;
            }
            case 2: // mottled shrubs and grass
            {
                Rgb a = J(0.42f, 0.5f, 0.2f), b = J(0.58f, 0.55f, 0.3f), c = J(0.25f, 0.38f, 0.15f);
                raster.Fill((x, y) =>
                {
                    float n = noise.Fractal(x, y, 0.2f, 3), m = noise.At(x * 0.7f + 40, y * 0.7f);
                    return Rgb.Lerp(Rgb.Lerp(a, b, n), c, m > 0.7f ? 0.8f : 0);
                });
                break;
            }
            case 3: // a straight road with a centre line across land
            {
                float half = random.NextFloat(1.5f, 2.8f);
                Rgb asphalt = J(0.42f, 0.42f, 0.42f, 0.06f);
                raster.Fill((x, y) =>
                {
                    float d = MathF.Abs(-sin * (x - 16) + cos * (y - 16) - offset);
                    Rgb land = Land(x, y);
                    if (d < 0.4f) return J(0.85f, 0.85f, 0.8f, 0);
                    return d < half ? asphalt : Rgb.Lerp(land, asphalt, 1 - ProceduralImages.SmoothStep(half, half + 1, d));
                });
                break;
            }
            case 4: // large flat roofs and yards
            {
                float block = random.NextFloat(7, 12);
                var shades = Enumerable.Range(0, 16).Select(_ => J(0.55f, 0.55f, 0.57f, 0.2f)).ToArray();
                raster.Fill((x, y) =>
                {
                    float u = cos * x + sin * y + 40, v = -sin * x + cos * y + 40;
                    float fu = ProceduralImages.Fract(u / block), fv = ProceduralImages.Fract(v / block);
                    if (fu < 0.12f || fv < 0.12f) return J(0.35f, 0.33f, 0.3f, 0);
                    return shades[((int)(u / block) * 5 + (int)(v / block) * 3) & 15];
                });
                break;
            }
            case 5: // smooth meadow
            {
                Rgb a = J(0.45f, 0.62f, 0.3f), b = J(0.52f, 0.68f, 0.35f);
                raster.Fill((x, y) => Rgb.Lerp(a, b, noise.Fractal(x, y, 0.06f, 2)));
                break;
            }
            case 6: // orchard: rows of tree crowns on bare soil
            {
                float pitch = random.NextFloat(3.2f, 4.5f);
                Rgb tree = J(0.15f, 0.35f, 0.12f), ground = J(0.6f, 0.52f, 0.38f);
                raster.Fill((x, y) =>
                {
                    float u = cos * x + sin * y, v = -sin * x + cos * y;
                    float du = ProceduralImages.Fract(u / pitch) - 0.5f, dv = ProceduralImages.Fract(v / pitch) - 0.5f;
                    float crown = 1 - ProceduralImages.SmoothStep(0.25f, 0.4f, MathF.Sqrt(du * du + dv * dv));
                    return Rgb.Lerp(ground, tree, crown);
                });
                break;
            }
            case 7: // small houses on a street grid with gardens
            {
                float pitch = random.NextFloat(5.5f, 7.5f);
                var roofs = Enumerable.Range(0, 8).Select(_ => random.NextInt(3) switch
                {
                    0 => J(0.65f, 0.3f, 0.22f, 0.1f), 1 => J(0.5f, 0.48f, 0.48f, 0.1f), _ => J(0.75f, 0.55f, 0.4f, 0.1f),
                }).ToArray();
                raster.Fill((x, y) =>
                {
                    float u = cos * x + sin * y + 40, v = -sin * x + cos * y + 40;
                    float fu = ProceduralImages.Fract(u / pitch), fv = ProceduralImages.Fract(v / pitch);
                    if (fu < 0.15f) return J(0.5f, 0.5f, 0.5f, 0);
                    if (fu > 0.3f && fu < 0.85f && fv > 0.2f && fv < 0.75f) return roofs[((int)(u / pitch) * 3 + (int)(v / pitch)) & 7];
                    return Land(x, y);
                });
                break;
            }
            case 8: // a winding river through land
            {
                float half = random.NextFloat(1.8f, 3.2f), bend = random.NextFloat(3, 6), wave = random.NextFloat(0.12f, 0.25f), phase = random.NextFloat(0, 6.28f);
                raster.Fill((x, y) =>
                {
                    float u = cos * (x - 16) + sin * (y - 16), v = -sin * (x - 16) + cos * (y - 16);
                    float d = MathF.Abs(v - offset - bend * MathF.Sin(wave * u + phase));
                    return Rgb.Lerp(water, Land(x, y), ProceduralImages.SmoothStep(half - 0.5f, half + 0.5f, d));
                });
                break;
            }
            default: // open water, sometimes with a shore
            {
                bool shore = random.NextInt(3) == 0;
                Rgb deep = water, shallow = J(0.12f, 0.3f, 0.4f, 0.04f);
                raster.Fill((x, y) =>
                {
                    Rgb w = Rgb.Lerp(deep, shallow, noise.Fractal(x, y, 0.08f, 2) * 0.6f);
                    if (!shore) return w;
                    float d = -sin * (x - 16) + cos * (y - 16) - 12 + 3 * noise.At(x * 0.15f, 5);
                    return d > 0 ? Land(x, y) : w;
                });
                break;
            }
        }

        raster.AddNoise(random, 0.03f);
    }
}
