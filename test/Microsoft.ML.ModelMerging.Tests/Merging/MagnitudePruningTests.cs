using Microsoft.ML.ModelMerging.Merging;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class MagnitudePruningTests
{
    [TestMethod]
    [DataRow(10L, 0.2, 3L)]
    [DataRow(10L, 0.05, 1L)]
    [DataRow(10L, 1.0, 10L)]
    [DataRow(7L, 0.5, 4L)]
    [DataRow(0L, 0.5, 0L)]
    public void ThresholdRankFollowsFusionBench(long count, double keep, long expectedRank)
    {
        // FusionBench: kthvalue(n − ⌊keep·n⌋) from the bottom, i.e. rank ⌊keep·n⌋ + 1 from the top.
        Assert.AreEqual(expectedRank, MagnitudePruning.ThresholdRank(count, keep));
    }

    [TestMethod]
    [DataRow(0.1)]
    [DataRow(0.3)]
    [DataRow(1.0)]
    public void PruneKeepsEntriesAtLeastTheThresholdIncludingTies(double keep)
    {
        using var scope = NewDisposeScope();
        var values = ReferenceModel.Create(seed: 40, experts: 1, new Dictionary<string, long[]> { ["w"] = [9, 7] })[0].TaskVectors[0];
        var pruned = MagnitudePruning.Prune(ReferenceModel.ToTensor(values, [9, 7]), keep);

        double threshold = MergeReference.Threshold(values, keep);
        ReferenceModel.AssertClose([.. values.Select(v => Math.Abs(v) >= threshold ? v : 0)], pruned, 0, $"keep {keep}");
        CollectionAssert.AreEqual(new long[] { 9, 7 }, pruned.shape);
    }

    [TestMethod]
    [DataRow(0.0)]
    [DataRow(1.5)]
    [DataRow(double.NaN)]
    public void KeepFractionMustBeInZeroOne(double keep)
    {
        using var scope = NewDisposeScope();
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => MagnitudePruning.Prune(ones(3), keep));
    }
}
