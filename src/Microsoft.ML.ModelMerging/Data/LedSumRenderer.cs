namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Two of the UCI optical digits (8×8 grids of 0..16, digits 0–4) side by side on a dot-matrix LED panel; the class is
/// their sum, 0–8. Reading it needs both digits, so its label space is neither the handwriting task's digits nor the
/// house numbers. The pairs of each split are drawn only from that split's share of the 8×8 scans, so no test scan was
/// seen in training.
/// </summary>
internal static class LedSumRenderer
{
    public const int LargestDigit = 4;

    public static readonly IReadOnlyList<string> ClassNames = Enumerable.Range(0, 2 * LargestDigit + 1).Select(s => $"sum-{s}").ToArray();

    private static readonly Rgb[] Leds = [new(1f, 0.2f, 0.1f), new(0.3f, 1f, 0.3f), new(1f, 0.7f, 0.1f), new(0.3f, 0.8f, 1f), new(0.95f, 0.95f, 0.9f)];

    /// <summary>Renders <paramref name="pairsPerClass"/> displays per sum from the 8×8 <paramref name="scans"/> (digits 0–4 only).</summary>
    public static ImageDataset Render(ImageDataset scans, int pairsPerClass, int seed, string name)
    {
        int[] labels = scans.Labels.ToArray();
        var byDigit = Enumerable.Range(0, LargestDigit + 1).Select(d => Enumerable.Range(0, labels.Length).Where(i => labels[i] == d).ToArray()).ToArray();
        foreach (var (indices, digit) in byDigit.Select((x, d) => (x, d)))
            if (indices.Length == 0) throw new InvalidDataException($"'{scans.Name}' has no scan of digit {digit}.");
        return ProceduralImages.Render(name, ClassNames, pairsPerClass, seed, (raster, sum, random) =>
        {
            // Any ordered pair with this sum, equally likely.
            int low = Math.Max(0, sum - LargestDigit), high = Math.Min(LargestDigit, sum);
            int left = low + random.NextInt(high - low + 1), right = sum - left;
            ReadOnlySpan<float> a = scans.Image(byDigit[left][random.NextInt(byDigit[left].Length)]);
            ReadOnlySpan<float> b = scans.Image(byDigit[right][random.NextInt(byDigit[right].Length)]);
            Draw(raster, a.ToArray(), b.ToArray(), random);
        });
    }

    private static void Draw(RgbRaster raster, float[] left, float[] right, SeededRandom random)
    {
        Rgb panel = ProceduralImages.Colour(random, 0f, 0.5f, 0.02f, 0.15f);
        Rgb led = ProceduralImages.Jitter(Leds[random.NextInt(Leds.Length)], random, 0.08f);
        raster.Fill((_, _) => panel);
        int top = 6 + random.NextInt(5), gap = random.NextInt(2);
        int start = (32 - 2 * 16 - gap) / 2 + (gap == 0 ? random.NextInt(1) : 0);
        DrawDigit(raster, left, start, top, panel, led);
        DrawDigit(raster, right, start + 16 + gap, top, panel, led);
        raster.AddNoise(random, 0.03f);
    }

    /// <summary>Each of the 8×8 cells is a 2×2 LED: brightness from the scan, an unlit LED still faintly visible.</summary>
    private static void DrawDigit(RgbRaster raster, float[] grid, int x0, int y0, Rgb panel, Rgb led)
    {
        for (int gy = 0; gy < 8; gy++)
            for (int gx = 0; gx < 8; gx++)
            {
                Rgb c = Rgb.Lerp(Rgb.Lerp(panel, led, 0.12f), led, grid[gy * 8 + gx]);
                for (int k = 0; k < 4; k++)
                {
                    int x = x0 + 2 * gx + k % 2, y = y0 + 2 * gy + k / 2;
                    if ((uint)x < 32 && (uint)y < 32) raster.Set(x, y, k == 3 ? Rgb.Lerp(panel, c, 0.5f) : c);
                }
            }
    }
}
