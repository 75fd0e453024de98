using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>A user's own task for <c>mlmerge finetune</c>: a benchmark task by name, or an image folder split the way benchmark tasks are.</summary>
public static class UserTask
{
    /// <summary>Fractions of an image folder used for validation and test (stratified per class, seeded).</summary>
    public const double ValidationFraction = 0.15, TestFraction = 0.15;

    public static TaskSplits Load(string nameOrFolder, int imageSize, int channels, int seed = 0, BenchmarkSources? sources = null)
    {
        if (!Directory.Exists(nameOrFolder)) return BenchmarkTasks.Get(nameOrFolder).Load(sources, seed);
        var all = ImageFolderReader.Read(nameOrFolder, imageSize, imageSize, channels == 3 ? ImageColorMode.Rgb : ImageColorMode.Grayscale,
            Path.GetFileName(Path.TrimEndingDirectorySeparator(nameOrFolder)));
        int test = Math.Max(all.ClassCount, (int)Math.Round(all.Count * TestFraction));
        int validation = Math.Max(all.ClassCount, (int)Math.Round(all.Count * ValidationFraction));
        int train = all.Count - test - validation;
        if (train < all.ClassCount)
            throw new ArgumentException($"{nameOrFolder}: {all.Count} images are too few to split into train/validation/test for {all.ClassCount} classes.");
        var parts = StratifiedSampler.Split(all.Labels.Span, all.ClassCount, new[] { train, validation, test }, seed);
        return new TaskSplits(all.Select(parts[0], all.Name + "/train"), all.Select(parts[1], all.Name + "/validation"), all.Select(parts[2], all.Name + "/test"));
    }
}
