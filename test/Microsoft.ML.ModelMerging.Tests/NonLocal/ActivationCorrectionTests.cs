using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

[TestClass]
public sealed class ActivationCorrectionTests
{
    private static readonly string[] TwoTasks = ["optical-digits", "glyph-letters"];

    /// <summary>
    /// TACT's promise, measured independently: after correction, every site's per-channel mean and variance on the task's
    /// images are the expert's. The statistics are recomputed here from the corrected forward, in float64, in chunks.
    /// </summary>
    [TestMethod]
    [DataRow(CorrectionStatistics.Channel)]
    [DataRow(CorrectionStatistics.Token)]
    public void CorrectedSitesHaveTheExpertsMeanAndVariance(CorrectionStatistics statistics)
    {
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var scope = NewDisposeScope();
        using var merged = new InMemoryMergeDriver().Merge(SimpleAverageMerge.Descriptor.Create(), pool.Pretrained, pool.Experts);
        string task = TwoTasks[0];
        Tensor images = pool.LoadData(task).Test.ToTensor().narrow(0, 0, 128);
        using var correction = ActivationCorrection.Fit(pool.Config, pool.Expert(task), merged.Merged, images, statistics: statistics);

        var expert = ActivationCorrection.SiteStatistics(pool.Config, pool.Expert(task), images, chunk: 50, statistics: statistics);
        var corrected = ActivationCorrection.SiteStatistics(pool.Config, merged.Merged, images, chunk: 50, hooks: correction.Forward, statistics: statistics);
        var uncorrected = ActivationCorrection.SiteStatistics(pool.Config, merged.Merged, images, chunk: 50, statistics: statistics);
        long perSite = statistics == CorrectionStatistics.Token ? pool.Config.TokenCount : 1;
        Assert.AreEqual(2 * perSite * ActivationCorrection.Sites(pool.Config).Sum(s => s.Site == ActivationSite.MlpHidden ? pool.Config.MlpSize : pool.Config.Width),
            correction.ParameterCount);
        Assert.HasCount(ActivationCorrection.Sites(pool.Config).Count, expert);
        double largestGapBefore = 0;
        foreach (var site in ActivationCorrection.Sites(pool.Config))
        {
            var (expertMean, expertVariance) = expert[site];
            var (mean, variance) = corrected[site];
            double meanGap = mean.sub(expertMean).abs().max().item<double>();
            double varianceGap = variance.sub(expertVariance).abs().div(expertVariance.AtLeast(1e-2)).max().item<double>();
            Assert.IsLessThan(1e-4, meanGap, $"mean at {site}");
            Assert.IsLessThan(1e-4, varianceGap, $"variance at {site} (relative)");
            largestGapBefore = Math.Max(largestGapBefore, uncorrected[site].Variance.sub(expertVariance).abs().div(expertVariance.AtLeast(1e-2)).max().item<double>());
        }

        Assert.IsGreaterThan(0.05, largestGapBefore, "the merge changed the statistics, so the test can tell a correction from none");
    }
}
