using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>A user's task as an image folder (one sub-folder per class), split into train / validation / test the way benchmark tasks are.</summary>
internal static class ImageFolderTask
{
    /// <summary>Default fractions of each class held out for validation and test (stratified, seeded).</summary>
    public const double ValidationFraction = 0.15, TestFraction = 0.15;

    /// <summary>A benchmark task by name, or an image folder split with the default fractions.</summary>
    public static TaskSplits Load(string nameOrFolder, int imageSize, int channels, int seed = 0, BenchmarkSources? sources = null) =>
        Directory.Exists(nameOrFolder)
            ? Load(nameOrFolder, imageSize, channels, seed, ValidationFraction, TestFraction)
            : BenchmarkTasks.Get(nameOrFolder).Load(sources, seed);

    /// <summary>
    /// Reads <paramref name="folder"/> at the model's image size and colour mode and splits it per class: at least one image
    /// of every class in validation and in test, the rest for training.
    /// </summary>
    /// <exception cref="ArgumentException">The fractions are out of range, or the folder has too few images to split.</exception>
    public static TaskSplits Load(string folder, int imageSize, int channels, int seed, double validationFraction, double testFraction, string? name = null)
    {
        CheckFractions(validationFraction, testFraction);
        var all = ImageFolderReader.Read(folder, imageSize, imageSize, channels == 3 ? ImageColorMode.Rgb : ImageColorMode.Grayscale, name ?? FolderName(folder));
        return Split(all, folder, seed, validationFraction, testFraction);
    }

    /// <summary>
    /// Reads <paramref name="folder"/> as a Hugging Face processor would (<see cref="ImagePreprocessing"/>: shortest side,
    /// centre crop, RGB) and splits it per class like <see cref="Load(string, int, int, int, double, double, string?)"/>.
    /// </summary>
    /// <param name="folder">The folder of class folders.</param>
    /// <param name="preprocessing">How each image is resized and cropped.</param>
    /// <param name="seed">Seed of the per-class split.</param>
    /// <param name="validationFraction">Share of each class held out for validation.</param>
    /// <param name="testFraction">Share of each class held out for test.</param>
    /// <param name="name">The task's name; the folder name when null.</param>
    /// <param name="checkFiles">Decode every file whole first, naming a broken one (see <see cref="PreprocessedImageReader.ReadFolder"/>).</param>
    public static TaskSplits Load(string folder, ImagePreprocessing preprocessing, int seed, double validationFraction, double testFraction, string? name = null,
        bool checkFiles = true)
    {
        CheckFractions(validationFraction, testFraction);
        var all = PreprocessedImageReader.ReadFolder(folder, preprocessing, name ?? FolderName(folder), checkFiles);
        return Split(all, folder, seed, validationFraction, testFraction);
    }

    /// <summary>
    /// What a user should know about how <paramref name="folder"/> was read, one sentence each: images in sub-folders of the
    /// class folders and files whose extension is not PNG or JPEG (hidden files aside) are left out; images with
    /// transparent pixels or an EXIF orientation are read as stored. Empty when there is nothing to say.
    /// </summary>
    public static IReadOnlyList<string> Notes(string folder)
    {
        var notes = new List<string>();
        if (ImageFolderReader.NestedImages(folder) is > 0 and var nested)
            notes.Add($"{nested} image(s) in sub-folders of the class folders of {folder} are not read (a class is the images directly in its folder)");
        if (ImageFolderReader.OtherFiles(folder) is { Count: > 0 } others)
        {
            var kinds = others.GroupBy(file => Path.GetExtension(file).ToLowerInvariant()).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => $"{(g.Key.Length == 0 ? "no extension" : g.Key)} ×{g.Count()}");
            notes.Add($"{others.Count} file(s) in the class folders of {folder} are not read: only PNG and JPEG are ({string.Join(", ", kinds)}; e.g. {others[0]})");
        }

        var files = ImageFolderReader.ListFiles(folder).Files.Select(f => f.Path).ToList();
        var traits = files.Select(ImageFolderReader.Traits).ToList();
        if (traits.Count(t => t.Transparent) is > 0 and var transparent)
            notes.Add($"{transparent} image(s) of {folder} have transparent pixels (e.g. {files[traits.FindIndex(t => t.Transparent)]}): they are read composited " +
                "over black, as ML.NET's LoadImages reads them; if your expert saw them otherwise (CLIP's processor keeps the colours under the " +
                "transparency), flatten them beforehand the same way");
        if (traits.Count(t => t.Oriented) is > 0 and var oriented)
            notes.Add($"{oriented} image(s) of {folder} carry an EXIF orientation (e.g. {files[traits.FindIndex(t => t.Oriented)]}): it is not applied, as ML.NET's " +
                "LoadImages does not apply it; rotate the pixels themselves beforehand (e.g. ImageMagick's mogrify -auto-orient) if your expert saw them upright");
        return notes;
    }

    private static string FolderName(string folder) => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder)));

    private static void CheckFractions(double validationFraction, double testFraction)
    {
        if (!(validationFraction > 0 && testFraction > 0 && validationFraction + testFraction < 1))
            throw new ArgumentException($"Validation and test fractions must be positive and sum to less than 1 (got {validationFraction} and {testFraction}).");
    }

    private static TaskSplits Split(ImageDataset all, string folder, int seed, double validationFraction, double testFraction)
    {
        // A class with fewer images than splits would be missing from validation or test, and its accuracy never measured.
        var perClass = new int[all.ClassCount];
        foreach (int label in all.Labels.Span) perClass[label]++;
        int smallest = Array.IndexOf(perClass, perClass.Min());
        if (perClass[smallest] < 3)
            throw new ArgumentException($"{folder}: class '{all.ClassNames[smallest]}' has {perClass[smallest]} image(s); every class needs at least 3, one for each of train, validation and test.");
        int test = Math.Max(all.ClassCount, (int)Math.Round(all.Count * testFraction));
        int validation = Math.Max(all.ClassCount, (int)Math.Round(all.Count * validationFraction));
        int train = all.Count - test - validation;
        if (train < all.ClassCount)
            throw new ArgumentException($"{folder}: {all.Count} images are too few to split into train/validation/test for {all.ClassCount} classes.");
        var parts = StratifiedSampler.Split(all.Labels.Span, all.ClassCount, new[] { train, validation, test }, seed);
        return new TaskSplits(all.Select(parts[0], all.Name + "/train"), all.Select(parts[1], all.Name + "/validation"), all.Select(parts[2], all.Name + "/test"));
    }
}
