namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Handwritten digits (gray 28×28, white on black) as pen strokes on paper: a light paper colour with fibre noise, plain,
/// ruled or squared, and ink in the colours of pens, the digit placed at a random offset in 32×32 RGB.
/// </summary>
internal static class InkOnPaperRenderer
{
    private static readonly Rgb[] Inks = [new(0.1f, 0.15f, 0.55f), new(0.08f, 0.08f, 0.1f), new(0.7f, 0.1f, 0.1f), new(0.1f, 0.4f, 0.2f), new(0.35f, 0.1f, 0.5f)];

    public static ImageDataset Render(ImageDataset gray, int seed, string name) =>
        ImageStyler.Restyle(gray, seed, name, (raster, image, random) =>
        {
            var noise = new ValueNoise(random);
            Rgb paper = Rgb.FromHsv(random.NextFloat(0.08f, 0.6f), random.NextFloat(0f, 0.25f), random.NextFloat(0.82f, 1f));
            Rgb rule = ProceduralImages.Jitter(new Rgb(0.5f, 0.65f, 0.85f), random, 0.1f);
            int lines = random.NextInt(3); // plain, ruled, squared
            float pitch = random.NextFloat(5, 8), phase = random.NextFloat(0, 8);
            raster.Fill((x, y) =>
            {
                Rgb p = paper.Scale(0.94f + 0.08f * noise.Fractal(x, y, 0.5f, 2));
                bool onLine = lines > 0 && MathF.Abs(ProceduralImages.Fract((y + phase) / pitch) - 0.5f) * pitch > pitch / 2 - 0.6f;
                bool onColumn = lines == 2 && MathF.Abs(ProceduralImages.Fract((x + phase) / pitch) - 0.5f) * pitch > pitch / 2 - 0.6f;
                return onLine || onColumn ? Rgb.Lerp(p, rule, 0.6f) : p;
            });
            Rgb ink = ProceduralImages.Jitter(Inks[random.NextInt(Inks.Length)], random, 0.06f);
            ImageStyler.Stamp(raster, image, random.NextInt(5), random.NextInt(5), ink, 0.95f);
            raster.AddNoise(random, 0.02f);
        });
}
