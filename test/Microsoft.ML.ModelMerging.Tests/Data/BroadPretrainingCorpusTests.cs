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
}
