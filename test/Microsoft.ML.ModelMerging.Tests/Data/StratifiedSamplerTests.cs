using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class StratifiedSamplerTests
{
    // 100 of class 0, 50 of class 1, 10 of class 2, interleaved.
    private static readonly int[] Labels = Enumerable.Range(0, 160).Select(i => i % 16 == 15 ? 2 : i % 3 == 0 && i % 16 != 15 ? 1 : 0).ToArray();

    [TestMethod]
    public void PartsAreDisjointAndOfTheRequestedSizes()
    {
        int[][] parts = StratifiedSampler.Split(Labels, 3, [80, 40, 20], seed: 5);

        CollectionAssert.AreEqual(new[] { 80, 40, 20 }, parts.Select(p => p.Length).ToArray());
        int[] all = parts.SelectMany(p => p).ToArray();
        Assert.HasCount(all.Length, all.Distinct());
        Assert.IsTrue(all.All(i => i is >= 0 and < 160));
    }

    [TestMethod]
    public void EveryPartKeepsThePoolsClassProportions()
    {
        int[] poolCounts = Enumerable.Range(0, 3).Select(c => Labels.Count(l => l == c)).ToArray();

        int[][] parts = StratifiedSampler.Split(Labels, 3, [80, 40], seed: 9);

        foreach (int[] part in parts)
        {
            for (int c = 0; c < 3; c++)
            {
                double expected = (double)part.Length * poolCounts[c] / Labels.Length;
                int actual = part.Count(i => Labels[i] == c);
                Assert.IsLessThan(1.0, Math.Abs(actual - expected), $"class {c} in a part of {part.Length}: {actual} vs {expected}");
            }
        }
    }

    [TestMethod]
    public void SameSeedSameIndicesOtherSeedOthers()
    {
        int[][] first = StratifiedSampler.Split(Labels, 3, [30, 10], seed: 1);
        int[][] again = StratifiedSampler.Split(Labels, 3, [30, 10], seed: 1);
        int[][] other = StratifiedSampler.Split(Labels, 3, [30, 10], seed: 2);

        CollectionAssert.AreEqual(first[0], again[0]);
        CollectionAssert.AreEqual(first[1], again[1]);
        CollectionAssert.AreNotEqual(first[0], other[0]);
    }

    [TestMethod]
    public void PartsAreShuffledNotSortedByClass()
    {
        int[] grouped = [.. Enumerable.Repeat(0, 50), .. Enumerable.Repeat(1, 50)];

        int[] part = StratifiedSampler.Split(grouped, 2, [40], seed: 4)[0];

        int[] labels = part.Select(i => grouped[i]).ToArray();
        Assert.AreEqual(20, labels.Count(l => l == 1));
        CollectionAssert.AreNotEqual(labels.Order().ToArray(), labels);
    }

    [TestMethod]
    public void AskingForMoreThanThePoolIsAnError()
    {
        Assert.ThrowsExactly<ArgumentException>(() => StratifiedSampler.Split(Labels, 3, [100, 61], seed: 0));
        Assert.ThrowsExactly<ArgumentException>(() => StratifiedSampler.Split([0, 3], 3, [1], seed: 0));
    }
}
