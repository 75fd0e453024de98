namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Shared loop of the procedural RGB renderers: images grouped by class, each drawn by a callback from its own seeded
/// random stream (so one image's draws never shift another's), quantised to 8 bits like a stored photograph.
/// </summary>
internal static class ProceduralImages
{
    /// <summary>Side of every image of the RGB benchmark (the default zoo's input size).</summary>
    public const int Size = 32;

    public static ImageDataset Render(string name, IReadOnlyList<string> classNames, int imagesPerClass, int seed,
        Action<RgbRaster, int, SeededRandom> draw) =>
        Render(name, classNames, imagesPerClass, seed, (raster, c, _, random) => draw(raster, c, random));

    /// <summary>As above; the callback also gets the image's position k within its class.</summary>
    public static ImageDataset Render(string name, IReadOnlyList<string> classNames, int imagesPerClass, int seed,
        Action<RgbRaster, int, int, SeededRandom> draw)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(imagesPerClass);
        int pixels = 3 * Size * Size;
        var data = new float[(long)classNames.Count * imagesPerClass * pixels];
        var labels = new int[classNames.Count * imagesPerClass];
        using var raster = new RgbRaster(Size);
        for (int c = 0; c < classNames.Count; c++)
        {
            for (int k = 0; k < imagesPerClass; k++)
            {
                int index = c * imagesPerClass + k;
                var random = new SeededRandom(seed, stream: (ulong)index * 2 + 1);
                Array.Clear(raster.Pixels);
                draw(raster, c, k, random);
                raster.CopyTo(data.AsSpan(index * pixels, pixels));
                labels[index] = c;
            }
        }

        return new ImageDataset(name, data, labels, classNames, 3, Size, Size);
    }

    /// <summary>A random colour: hue anywhere, saturation and value in the given ranges.</summary>
    public static Rgb Colour(SeededRandom random, float minS = 0.3f, float maxS = 1f, float minV = 0.3f, float maxV = 1f) =>
        Rgb.FromHsv((float)random.NextDouble(), random.NextFloat(minS, maxS), random.NextFloat(minV, maxV));

    /// <summary>A colour near <paramref name="c"/>: each channel moved by up to ±<paramref name="amount"/>.</summary>
    public static Rgb Jitter(Rgb c, SeededRandom random, float amount) => new(
        Math.Clamp(c.R + random.NextFloat(-amount, amount), 0, 1),
        Math.Clamp(c.G + random.NextFloat(-amount, amount), 0, 1),
        Math.Clamp(c.B + random.NextFloat(-amount, amount), 0, 1));

    public static float Luma(Rgb c) => 0.299f * c.R + 0.587f * c.G + 0.114f * c.B;

    public static float SmoothStep(float edge0, float edge1, float x)
    {
        float t = Math.Clamp((x - edge0) / (edge1 - edge0), 0, 1);
        return t * t * (3 - 2 * t);
    }

    public static float Fract(float x) => x - MathF.Floor(x);
}
