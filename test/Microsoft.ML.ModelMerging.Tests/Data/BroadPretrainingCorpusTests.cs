using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class BroadPretrainingCorpusTests
{
    /// <summary>Broader than the glyph corpus, and no label of the default benchmark (nor a road sign's arrow) among its classes.</summary>
    [TestMethod]
    public void ClassesAreMoreThanTheGlyphCorpusAndDisjointFromTheBenchmark()
    {
        var classes = BroadPretrainingCorpus.ClassNames;
        Assert.IsGreaterThan(PretrainingCorpus.ClassNames.Count, classes.Count);
        Assert.HasCount(classes.Count, classes.Distinct());
        var benchmark = BenchmarkTasks.Default.SelectMany(t => t.ClassNames).ToHashSet(StringComparer.OrdinalIgnoreCase);
        Assert.IsEmpty(classes.Where(benchmark.Contains), "benchmark labels in the corpus");
        foreach (string arrow in "←↑→".Select(c => c.ToString()))
            Assert.DoesNotContain(arrow, BroadPretrainingCorpus.Glyphs);
    }

    [TestMethod]
    public void LoadIsDeterministicBalancedAndRgb()
    {
        RealData.Fonts();
        TaskSplits first = BroadPretrainingCorpus.Load(trainPerClass: 2, validationPerClass: 1, testPerClass: 1, seed: 4);
        TaskSplits again = BroadPretrainingCorpus.Load(trainPerClass: 2, validationPerClass: 1, testPerClass: 1, seed: 4);
        Assert.AreEqual(first.Train.Fingerprint, again.Train.Fingerprint);
        Assert.AreEqual(first.Test.Fingerprint, again.Test.Fingerprint);
        Assert.AreEqual((3, 32, 32), (first.Train.Channels, first.Train.Height, first.Train.Width));
        Assert.IsTrue(first.Train.CountPerClass().All(n => n == 2));
        Assert.IsTrue(first.Test.CountPerClass().All(n => n == 1));
    }

    /// <summary>
    /// The settings corpus is the broad corpus plus the setting classes: the other classes keep their images, each setting
    /// class is balanced, and the settings are told apart by their ground (a nearest-centroid rule on mean colour and
    /// contrast of a few images per setting sorts held-out ones well above chance).
    /// </summary>
    [TestMethod]
    public void SettingsCorpusAddsRecognisableSettingClassesAndKeepsTheOthers()
    {
        RealData.Fonts();
        TaskSplits plain = BroadPretrainingCorpus.Load(trainPerClass: 6, validationPerClass: 1, testPerClass: 1, seed: 2);
        TaskSplits settings = BroadPretrainingCorpus.Load(trainPerClass: 6, validationPerClass: 1, testPerClass: 1, seed: 2, settings: true);
        int baseClasses = BroadPretrainingCorpus.ClassNames.Count, settingClasses = BroadPretrainingCorpus.SettingClassNames.Count;
        CollectionAssert.AreEqual(BroadPretrainingCorpus.ClassNames.Concat(BroadPretrainingCorpus.SettingClassNames).ToArray(), settings.Train.ClassNames.ToArray());
        Assert.IsTrue(settings.Train.CountPerClass().All(n => n == 6));

        // Every image of a non-setting class in the settings corpus is one of the plain corpus's images of that class.
        var plainImages = AllImages(plain).Select(x => (x.Label, Key(x.Image))).ToHashSet();
        var withSettings = AllImages(settings).ToList();
        Assert.IsTrue(withSettings.Where(x => x.Label < baseClasses).All(x => plainImages.Contains((x.Label, Key(x.Image)))));

        // Mean and spread of each channel: 6 numbers per image, a centroid per setting from the training images.
        static double[] Stats(float[] image)
        {
            int plane = image.Length / 3;
            return Enumerable.Range(0, 3).SelectMany(c =>
            {
                var channel = image.AsSpan(c * plane, plane).ToArray();
                double mean = channel.Average();
                return new[] { mean, Math.Sqrt(channel.Average(v => (v - mean) * (v - mean))) };
            }).ToArray();
        }

        var centroids = new double[settingClasses][];
        for (int s = 0; s < settingClasses; s++)
        {
            var stats = Images(settings.Train).Where(x => x.Label == baseClasses + s).Select(x => Stats(x.Image)).ToList();
            centroids[s] = Enumerable.Range(0, 6).Select(j => stats.Average(v => v[j])).ToArray();
        }

        var held = Images(settings.Validation).Concat(Images(settings.Test)).Where(x => x.Label >= baseClasses).ToList();
        int right = held.Count(x =>
        {
            double[] v = Stats(x.Image);
            int nearest = Enumerable.Range(0, settingClasses).MinBy(s => centroids[s].Select((c, j) => (c - v[j]) * (c - v[j])).Sum());
            return nearest == x.Label - baseClasses;
        });
        Assert.IsGreaterThan(0.4, right / (double)held.Count, $"{right} of {held.Count} held-out setting images sorted by colour statistics (chance {1.0 / settingClasses:P0})");
    }

    private static IEnumerable<(int Label, float[] Image)> Images(ImageDataset data) =>
        Enumerable.Range(0, data.Count).Select(i => (data.Labels.Span[i], data.Image(i).ToArray()));

    private static IEnumerable<(int Label, float[] Image)> AllImages(TaskSplits splits) =>
        Images(splits.Train).Concat(Images(splits.Validation)).Concat(Images(splits.Test));

    private static string Key(float[] image) => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(image.AsSpan())));
}
