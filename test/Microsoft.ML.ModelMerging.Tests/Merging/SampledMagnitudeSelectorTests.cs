using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class SampledMagnitudeSelectorTests
{
    /// <summary>Magnitudes with many repeats, zeros and subnormals, signs mixed, in chunks as a driver would feed them.</summary>
    private static float[][] Series(int seed, int count)
    {
        var random = new Random(seed);
        float[] palette = [0f, 1e-41f, 0.5f, 0.75f, 1f];
        return [.. Enumerable.Range(0, 2).Select(s => Enumerable.Range(0, count).Select(i =>
            (random.Next(2) == 0 ? -1 : 1) * (i % 7 == 0 ? palette[random.Next(palette.Length)] : (float)(random.NextDouble() * Math.Pow(10, random.Next(-6, 3))))).ToArray())];
    }

    private static float LargestByFullSort(float[] values, long rank) =>
        values.Select(Math.Abs).OrderByDescending(v => v).ElementAt((int)rank - 1);

    [TestMethod]
    [DataRow(0.2)]
    [DataRow(0.001)]
    [DataRow(0.9)]
    [DataRow(1.0)]
    public void FindsTheExactMagnitudeFromASample(double keep)
    {
        var series = Series(3, 100_000);
        var selector = new SampledMagnitudeSelector(2, keep, maxCountedPatterns: 0); // values kept, whatever the bracket's width
        var sample = selector.CreateSamplePartial();
        for (int s = 0; s < 2; s++) sample.Add(s, series[s].AsSpan(0, 5_000)); // a twentieth, as the driver's sample would be
        selector.AddSample(sample);
        selector.FinishSample();

        // Two threads' partials, chunks of odd lengths (the vector loop and its scalar tail).
        var partials = new[] { selector.CreateWindowPartial(), selector.CreateWindowPartial() };
        for (int s = 0; s < 2; s++)
            for (int start = 0, k = 0; start < series[s].Length; start += 3_333, k++)
                partials[k % 2].Add(s, series[s].AsSpan(start, Math.Min(3_333, series[s].Length - start)));
        foreach (var partial in partials) selector.AddWindow(partial);

        var found = selector.FinishWindow(count => MagnitudePruning.ThresholdRank(count, keep));
        CollectionAssert.AreEqual(new long[] { 100_000, 100_000 }, selector.Counts.ToArray());
        for (int s = 0; s < 2; s++)
        {
            long rank = MagnitudePruning.ThresholdRank(series[s].Length, keep);
            Assert.IsNotNull(found[s], $"series {s}, keep {keep}: the bracket should hold rank {rank}");
            Assert.AreEqual(LargestByFullSort(series[s], rank), found[s]!.Value, $"series {s}, keep {keep}");
        }
    }

    /// <summary>
    /// Gaussian task vectors (as fine-tuning gives) bracket narrowly: the bracket is counted per bit pattern, and the
    /// rank found there equals a full sort, also with many values repeated exactly at the threshold.
    /// </summary>
    [TestMethod]
    [DataRow(0.2)]
    [DataRow(0.05)]
    public void ANarrowBracketIsCountedPerBitPatternAndExact(double keep)
    {
        var random = new Random(8);
        float Gaussian() => (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()) * 0.01);
        var series = new[] { Enumerable.Range(0, 400_000).Select(_ => Gaussian()).ToArray(), Enumerable.Range(0, 400_000).Select(_ => Gaussian()).ToArray() };
        long rank = MagnitudePruning.ThresholdRank(400_000, keep);
        // Series 1: a thousand copies of the exact threshold value, so the wanted rank falls inside a run of ties.
        float tied = series[1].Select(Math.Abs).OrderByDescending(v => v).ElementAt((int)rank - 1);
        for (int i = 0; i < 1_000; i++) series[1][i * 397] = i % 2 == 0 ? tied : -tied;

        var selector = new SampledMagnitudeSelector(2, keep);
        var sample = selector.CreateSamplePartial();
        for (int s = 0; s < 2; s++) sample.Add(s, series[s]); // a large sample brackets narrowly
        selector.AddSample(sample);
        selector.FinishSample();
        Assert.IsTrue(selector.IsCounted(0) && selector.IsCounted(1), "both brackets are narrow enough to count");
        var partials = new[] { selector.CreateWindowPartial(), selector.CreateWindowPartial() };
        for (int s = 0; s < 2; s++)
            for (int start = 0, k = 0; start < series[s].Length; start += 32_768, k++)
                partials[k % 2].Add(s, series[s].AsSpan(start, Math.Min(32_768, series[s].Length - start)));
        foreach (var partial in partials) selector.AddWindow(partial);

        var found = selector.FinishWindow(count => MagnitudePruning.ThresholdRank(count, keep));
        for (int s = 0; s < 2; s++) Assert.AreEqual(LargestByFullSort(series[s], rank), found[s], $"series {s}");
    }

    [TestMethod]
    public void AnUnrepresentativeSampleLeavesTheSeriesUnresolved()
    {
        var series = Series(4, 20_000);
        var selector = new SampledMagnitudeSelector(2, 0.2);
        var sample = selector.CreateSamplePartial();
        sample.Add(0, series[0].AsSpan(0, 2_000));
        sample.Add(1, series[1].Select(v => v * 1000).ToArray()); // series 1's sample is a thousand times too large
        selector.AddSample(sample);
        selector.FinishSample();
        var partial = selector.CreateWindowPartial();
        for (int s = 0; s < 2; s++) partial.Add(s, series[s]);
        selector.AddWindow(partial);

        var found = selector.FinishWindow(count => MagnitudePruning.ThresholdRank(count, 0.2));
        Assert.AreEqual(LargestByFullSort(series[0], MagnitudePruning.ThresholdRank(20_000, 0.2)), found[0]);
        Assert.IsNull(found[1]);
    }

    [TestMethod]
    public void TooManyValuesInsideTheBracketLeaveItUnresolved()
    {
        var series = Series(5, 20_000);
        var selector = new SampledMagnitudeSelector(2, 0.2, maxWindowValues: 50, maxCountedPatterns: 0);
        var sample = selector.CreateSamplePartial();
        for (int s = 0; s < 2; s++) sample.Add(s, series[s].AsSpan(0, 500));
        selector.AddSample(sample);
        selector.FinishSample();
        var partial = selector.CreateWindowPartial();
        for (int s = 0; s < 2; s++) partial.Add(s, series[s]);
        selector.AddWindow(partial);

        Assert.IsTrue(selector.FinishWindow(count => MagnitudePruning.ThresholdRank(count, 0.2)).All(t => t is null));
    }

    [TestMethod]
    public void LargestAtEqualsAFullSort()
    {
        var random = new Random(6);
        var values = Enumerable.Range(0, 50_000).Select(_ => (uint)random.Next(0, 1 << 20) << random.Next(0, 12)).ToArray();
        var sorted = values.OrderByDescending(v => v).ToArray();
        foreach (long rank in new long[] { 1, 2, 777, 25_000, 49_999, 50_000 })
            Assert.AreEqual(sorted[rank - 1], SampledMagnitudeSelector.LargestAt(values, rank), $"rank {rank}");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SampledMagnitudeSelector.LargestAt(values, 0));
    }
}
