namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Procedural textures in the manner of the Describable Textures Dataset (DTD): ten patterns, each in two random
/// colours at a random scale, orientation and phase, with sensor noise. The class is the pattern, never the colour.
/// </summary>
internal static class TextureRenderer
{
    public static readonly IReadOnlyList<string> ClassNames =
        ["striped", "dotted", "checkered", "zigzagged", "wavy", "grid", "crosshatched", "speckled", "bricked", "ringed"];

    public static ImageDataset Render(int imagesPerClass, int seed, string name) =>
        ProceduralImages.Render(name, ClassNames, imagesPerClass, seed, Draw);

    private static void Draw(RgbRaster raster, int pattern, SeededRandom random)
    {
        Rgb a = ProceduralImages.Colour(random, 0.2f, 1f, 0.1f, 0.6f);
        Rgb b = ProceduralImages.Colour(random, 0f, 0.8f, 0.65f, 1f);
        if (random.NextInt(2) == 0) (a, b) = (b, a);
        float period = random.NextFloat(5f, 10f);
        float angle = random.NextFloat(0, MathF.PI);
        float cos = MathF.Cos(angle), sin = MathF.Sin(angle);
        float ox = random.NextFloat(0, 50), oy = random.NextFloat(0, 50);
        float amplitude = random.NextFloat(1.5f, 3f), width = random.NextFloat(0.12f, 0.25f);
        float cx = random.NextFloat(4, 28), cy = random.NextFloat(4, 28);
        var noise = new ValueNoise(random);
        float threshold = random.NextFloat(0.62f, 0.7f), grain = random.NextFloat(0.35f, 0.6f);
        raster.Fill((x, y) =>
        {
            float u = cos * x + sin * y + ox, v = -sin * x + cos * y + oy;
            float t = pattern switch
            {
                0 => Band(v / period, 0.5f),
                1 => Dot(u / period, v / period, 0.28f),
                2 => ((int)MathF.Floor(u / period) + (int)MathF.Floor(v / period)) % 2 == 0 ? 1 : 0,
                3 => Band((v + amplitude * Triangle(u / period)) / period, 0.5f),
                4 => Band((v + amplitude * MathF.Sin(2 * MathF.PI * u / period)) / period, 0.5f),
                5 => MathF.Max(Band(u / period, width), Band(v / period, width)),
                6 => MathF.Max(Band((u + v) / (1.41f * period), width), Band((u - v) / (1.41f * period), width)),
                7 => noise.At(x * grain, y * grain) > threshold ? 1 : 0,
                8 => Brick(u / period, v / period),
                _ => Band(MathF.Sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / period, 0.5f),
            };
            return Rgb.Lerp(a, b, t);
        });
        raster.AddNoise(random, 0.04f);
    }

    /// <summary>1 on a band of relative <paramref name="width"/> once per unit of <paramref name="s"/>, soft-edged.</summary>
    private static float Band(float s, float width)
    {
        float d = MathF.Abs(ProceduralImages.Fract(s) - 0.5f);
        return 1 - ProceduralImages.SmoothStep(width / 2 - 0.06f, width / 2 + 0.06f, d);
    }

    private static float Dot(float u, float v, float radius)
    {
        float du = ProceduralImages.Fract(u) - 0.5f, dv = ProceduralImages.Fract(v) - 0.5f;
        return 1 - ProceduralImages.SmoothStep(radius - 0.08f, radius + 0.08f, MathF.Sqrt(du * du + dv * dv));
    }

    private static float Triangle(float s) => 4 * MathF.Abs(ProceduralImages.Fract(s) - 0.5f) - 1;

    /// <summary>Mortar lines of a running-bond brick wall (bricks two units long, rows offset by half a brick).</summary>
    private static float Brick(float u, float v)
    {
        float row = MathF.Floor(v);
        float along = u / 2 + (row % 2 == 0 ? 0 : 0.5f);
        return MathF.Max(Band(v + 0.5f, 0.18f), Band(along + 0.5f, 0.09f));
    }
}
