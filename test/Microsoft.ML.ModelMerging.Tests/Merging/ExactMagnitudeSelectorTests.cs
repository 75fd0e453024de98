using Microsoft.ML.ModelMerging.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class ExactMagnitudeSelectorTests
{
    [TestMethod]
    public void Float32BitsMatchBitConverterAcrossChunks()
    {
        float[] values = [0f, -0f, 1f, -2.5f, float.Epsilon, 1e-40f, 3.4e38f, 0.1f, -7.25e-12f, 123456.78f, 5f];
        using var source = torch.tensor(values).reshape(1, values.Length);
        using var bits = ExactMagnitudeSelector.Float32Bits(source, chunkElements: 3);

        CollectionAssert.AreEqual(values.Select(BitConverter.SingleToInt32Bits).ToArray(), bits.flatten().data<int>().ToArray());
        CollectionAssert.AreEqual(new long[] { 1, values.Length }, bits.shape);
    }

    [TestMethod]
    public void RanksEqualFullSortWithTiesZerosAndSubnormals()
    {
        using var scope = NewDisposeScope();
        // Two series over three tensors; magnitudes repeat, include zeros, subnormals and values 40 binades apart.
        var random = new Random(5);
        float[] palette = [0f, 0f, 1e-41f, 3e-39f, 1e-20f, 0.5f, 0.5f, 0.75f, 1f, 1f + 1.1920929e-7f, 2f, 1e10f, 1e20f];
        long[][] shapes = [[7, 3], [11], [2, 2, 2]];
        var tensors = shapes.Select(shape =>
        {
            int length = (int)shape.Aggregate(1L, (a, b) => a * b);
            var data = Enumerable.Range(0, 2 * length).Select(_ => palette[random.Next(palette.Length)] * (random.Next(2) == 0 ? -1 : 1)).ToArray();
            return torch.tensor(data).reshape([2, .. shape]);
        }).ToArray();
        var bySeries = Enumerable.Range(0, 2)
            .Select(s => tensors.SelectMany(t => t[s].flatten().data<float>().ToArray()).Select(Math.Abs).OrderByDescending(v => v).ToArray())
            .ToArray();
        int count = bySeries[0].Length;

        Assert.AreEqual(40, count);
        foreach (int rank in new[] { 1, 2, 5, 11, 17, 20, 23, 31, 39, 40 })
        {
            // Chunks of 8 values: the larger tensors are turned into bits in several slices.
            using var selector = new ExactMagnitudeSelector(2, chunkElements: 8);
            foreach (var t in tensors)
            {
                selector.AccumulateCoarse(t);
            }

            CollectionAssert.AreEqual(new long[] { count, count }, selector.Counts.ToArray());
            selector.FinishCoarse([rank, count + 1 - rank]);
            foreach (var t in tensors.Reverse())
            {
                selector.AccumulateFine(t);
            }

            var thresholds = selector.FinishFine();
            Assert.AreEqual(bySeries[0][rank - 1], thresholds[0], $"series 0, rank {rank}");
            Assert.AreEqual(bySeries[1][count - rank], thresholds[1], $"series 1, rank {count + 1 - rank}");
        }
    }

    [TestMethod]
    public void RankZeroMeansNoThreshold()
    {
        using var values = torch.tensor(new float[] { 3, -4, 5 }).reshape(1, 3);
        using var selector = new ExactMagnitudeSelector(1);
        selector.AccumulateCoarse(values);
        selector.FinishCoarse([0]);
        selector.AccumulateFine(values);
        Assert.AreEqual(0f, selector.FinishFine()[0]);
    }

    [TestMethod]
    public void MisuseIsReported()
    {
        using var scope = NewDisposeScope();
        using var values = torch.tensor(new float[] { 3, -4, 5 }).reshape(1, 3);
        using var selector = new ExactMagnitudeSelector(1);
        Assert.ThrowsExactly<InvalidOperationException>(() => selector.AccumulateFine(values));
        Assert.ThrowsExactly<InvalidOperationException>(() => selector.FinishFine());
        var wrongSeries = Assert.ThrowsExactly<ArgumentException>(() => selector.AccumulateCoarse(torch.zeros(2, 3)));
        Assert.Contains("[1, ...]", wrongSeries.Message);
        selector.AccumulateCoarse(values);
        var tooLarge = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => selector.FinishCoarse([4]));
        Assert.Contains("3 value(s)", tooLarge.Message);
    }
}
