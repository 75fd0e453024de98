namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The default zoo's pre-training corpus, 32×32 RGB, broader than the glyph corpus of the far zoo and disjoint from the
/// eight default tasks' labels: the glyphs of <see cref="PretrainingVocabulary"/> (Greek, Cyrillic, Georgian, Hebrew,
/// symbols, dingbats, ...; arrows left out, which road signs draw) in random colours on plain, graded or mottled grounds;
/// twelve colour families; patterns none of the texture classes has (triangles, hexagons, scribbles, blobs,
/// gradients, split fields); and counts of discs. A backbone trained to tell these apart learns colour, stroke,
/// shape and texture features without seeing a benchmark class, as CLIP's image tower is a generic starting point.
/// </summary>
public static class BroadPretrainingCorpus
{
    /// <summary>The corpus's name, as recorded in a pool's pre-training record.</summary>
    public const string Name = "broad-pretraining";

    /// <summary>The corpus with the <see cref="SettingRenderer"/> classes added (default zoo v4): the same images plus settings.</summary>
    public const string WithSettingsName = "broad-pretraining-settings";

    /// <summary>Vocabulary glyphs left out: the arrows a road sign draws (ahead, left, right).</summary>
    public const string ExcludedGlyphs = "←↑→↓⇐⇑⇒⇓⇦⇧⇨⇩";

    /// <summary>The glyph classes: the vocabulary without <see cref="ExcludedGlyphs"/>.</summary>
    public static IReadOnlyList<string> Glyphs { get; } =
        PretrainingVocabulary.Characters.Where(c => !ExcludedGlyphs.Contains(c, StringComparison.Ordinal)).ToArray();

    /// <summary>The pattern classes, none of which a texture task has.</summary>
    public static readonly IReadOnlyList<string> Patterns =
        ["triangles", "hexagons", "scribbles", "blobs", "radial-gradient", "linear-gradient", "split-field", "plasma"];

    /// <summary>Number of colour-family classes (12) and the largest disc count (5).</summary>
    public const int HueFamilies = 12, MaxDiscs = 5;

    /// <summary>The setting classes ("setting-paper", ...) of <see cref="WithSettingsName"/>, after every other class.</summary>
    public static IReadOnlyList<string> SettingClassNames { get; } = SettingRenderer.Names.Select(s => $"setting-{s}").ToArray();

    /// <summary>Glyph classes ("Ж U+0416"), then "hue-00".."hue-11", the patterns, then "1-disc".."5-discs".</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
    [
        .. Glyphs.Select(PretrainingVocabulary.ClassName),
        .. Enumerable.Range(0, HueFamilies).Select(h => $"hue-{h:D2}"),
        .. Patterns,
        .. Enumerable.Range(1, MaxDiscs).Select(n => n == 1 ? "1-disc" : $"{n}-discs"),
    ];

    /// <summary>
    /// Renders the corpus and splits it per class: exactly the requested number of images of every class in each part.
    /// With <paramref name="settings"/>, the <see cref="SettingClassNames"/> follow the other classes (the other classes'
    /// images are the same either way).
    /// </summary>
    public static TaskSplits Load(BenchmarkSources? sources = null, int trainPerClass = 100, int validationPerClass = 10, int testPerClass = 10, int seed = 0,
        bool settings = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(trainPerClass);
        sources ??= BenchmarkSources.Default;
        int perClass = trainPerClass + validationPerClass + testPerClass;
        int taskSeed = BenchmarkTask.DeriveSeed(seed, Name);
        using var renderer = new GlyphRenderer(FontCatalog.Find(sources.FontDirectory),
            new GlyphRenderOptions { Size = ProceduralImages.Size, MinFill = 0.55f, MaxFill = 0.85f, MaxRotationDegrees = 15, MaxShift = 3 });
        ImageDataset glyphs = renderer.Render(Glyphs, perClass, taskSeed, Name);
        int glyphClasses = Glyphs.Count, baseClasses = ClassNames.Count;
        IReadOnlyList<string> classNames = settings ? [.. ClassNames, .. SettingClassNames] : ClassNames;
        ImageDataset pool = ProceduralImages.Render(Name, classNames, perClass, taskSeed, (raster, c, k, random) =>
        {
            // A setting shows any vocabulary glyph: its class is the setting.
            if (c >= baseClasses) SettingRenderer.Draw(raster, c - baseClasses, glyphs.Image(random.NextInt(glyphs.Count)).ToArray(), random);
            else if (c < glyphClasses) DrawGlyph(raster, glyphs.Image(c * perClass + k).ToArray(), random);
            else if (c < glyphClasses + HueFamilies) DrawHue(raster, c - glyphClasses, random);
            else if (c < glyphClasses + HueFamilies + Patterns.Count) DrawPattern(raster, c - glyphClasses - HueFamilies, random);
            else DrawDiscs(raster, c - glyphClasses - HueFamilies - Patterns.Count + 1, random);
        });
        int classes = classNames.Count;
        return BenchmarkTasks.SplitPool(Name, pool, new SplitSizes(classes * trainPerClass, classes * validationPerClass, classes * testPerClass), taskSeed);
    }

    private static void DrawGlyph(RgbRaster raster, float[] alpha, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        Rgb a = ProceduralImages.Colour(random, 0f, 1f, 0.1f, 1f), b = ProceduralImages.Jitter(a, random, 0.3f);
        int ground = random.NextInt(3);
        float scale = random.NextFloat(0.1f, 0.3f);
        raster.Fill((x, y) => ground switch { 0 => a, 1 => Rgb.Lerp(a, b, y / 32f), _ => Rgb.Lerp(a, b, noise.Fractal(x, y, scale)) });
        // The glyph contrasts with its ground: a colour far from the ground's brightness.
        Rgb ink = ProceduralImages.Luma(a) > 0.5f ? ProceduralImages.Colour(random, 0f, 1f, 0f, 0.4f) : ProceduralImages.Colour(random, 0f, 1f, 0.7f, 1f);
        ImageStyler.Stamp(raster, alpha, 0, 0, ink, 1);
        raster.AddNoise(random, 0.03f);
    }

    private static void DrawHue(RgbRaster raster, int family, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        float hue = (family + random.NextFloat(0.2f, 0.8f)) / HueFamilies;
        float s = random.NextFloat(0.45f, 1f), v = random.NextFloat(0.45f, 1f), scale = random.NextFloat(0.05f, 0.3f);
        raster.Fill((x, y) => Rgb.FromHsv(hue, s * (0.8f + 0.2f * noise.At(x * scale, y * scale)), v * (0.7f + 0.3f * noise.Fractal(x, y, scale))));
        raster.AddNoise(random, 0.03f);
    }

    private static void DrawPattern(RgbRaster raster, int pattern, SeededRandom random)
    {
        var noise = new ValueNoise(random);
        Rgb a = ProceduralImages.Colour(random, 0.1f, 1f, 0.1f, 0.6f), b = ProceduralImages.Colour(random, 0f, 1f, 0.6f, 1f);
        float period = random.NextFloat(6, 11), angle = random.NextFloat(0, MathF.PI), cos = MathF.Cos(angle), sin = MathF.Sin(angle);
        float cx = random.NextFloat(0, 32), cy = random.NextFloat(0, 32), scale = random.NextFloat(0.05f, 0.12f);
        var lines = Enumerable.Range(0, 4).Select(_ => (random.NextFloat(0, 32), random.NextFloat(0, 32), random.NextFloat(0.15f, 0.45f), random.NextFloat(0, 6.28f))).ToArray();
        raster.Fill((x, y) =>
        {
            float u = cos * x + sin * y, v = -sin * x + cos * y;
            float t = pattern switch
            {
                0 => ProceduralImages.Fract(u / period) + ProceduralImages.Fract(v / period) > 1 ? 1 : 0,
                1 => Hexagon(u / period, v / period),
                2 => lines.Max(l => MathF.Abs(MathF.Sin(l.Item3 * (u - l.Item1) + l.Item4) * 6 - (v - l.Item2 + 16) % 12 + 6) < 0.9f ? 1f : 0f),
                3 => noise.Fractal(x, y, scale, 2) > 0.5f ? 1 : 0,
                4 => Math.Clamp(MathF.Sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / 30, 0, 1),
                5 => Math.Clamp(u / 45 + 0.35f, 0, 1),
                6 => u > cos * cx + sin * cy ? 1 : 0,
                _ => 0.5f + 0.25f * (MathF.Sin(u / period * 2) + MathF.Sin(MathF.Sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / period * 3)),
            };
            return Rgb.Lerp(a, b, t);
        });
        raster.AddNoise(random, 0.03f);
    }

    /// <summary>1 inside a hexagonal cell's border band (a honeycomb), from the distance to the nearest of two offset lattices.</summary>
    private static float Hexagon(float u, float v)
    {
        const float h = 0.8660254f;
        float au = ProceduralImages.Fract(u) - 0.5f, av = ProceduralImages.Fract(v / (2 * h)) * 2 * h - h;
        float bu = ProceduralImages.Fract(u + 0.5f) - 0.5f, bv = ProceduralImages.Fract(v / (2 * h) + 0.5f) * 2 * h - h;
        float da = au * au + av * av, db = bu * bu + bv * bv;
        return MathF.Abs(da - db) < 0.08f ? 1 : 0;
    }

    private static void DrawDiscs(RgbRaster raster, int count, SeededRandom random)
    {
        Rgb ground = ProceduralImages.Colour(random, 0f, 0.6f, 0.1f, 0.9f);
        raster.Fill((_, _) => ground);
        var placed = new List<(float X, float Y, float R)>();
        while (placed.Count < count)
        {
            float r = random.NextFloat(2.2f, 4.5f), x = random.NextFloat(r, 32 - r), y = random.NextFloat(r, 32 - r);
            if (placed.Any(p => (p.X - x) * (p.X - x) + (p.Y - y) * (p.Y - y) < (p.R + r + 1) * (p.R + r + 1))) continue;
            placed.Add((x, y, r));
        }

        Rgb ink = ProceduralImages.Luma(ground) > 0.5f ? ProceduralImages.Colour(random, 0f, 1f, 0f, 0.4f) : ProceduralImages.Colour(random, 0f, 1f, 0.65f, 1f);
        foreach (var (px, py, pr) in placed)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                {
                    float d = MathF.Sqrt((x + 0.5f - px) * (x + 0.5f - px) + (y + 0.5f - py) * (y + 0.5f - py));
                    raster.Blend(x, y, ink, Math.Clamp(pr - d + 0.5f, 0, 1));
                }

        raster.AddNoise(random, 0.03f);
    }
}
