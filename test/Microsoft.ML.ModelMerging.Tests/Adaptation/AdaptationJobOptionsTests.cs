using Microsoft.ML.ModelMerging.Adaptation;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

[TestClass]
public sealed class AdaptationJobOptionsTests
{
    [TestMethod]
    public void TheManifestRecordsOnlyTheSettingsThatApplyToTheMethod()
    {
        var wemoe = new AdaptationJobOptions { Method = AdaptationMethod.WeightEnsembling, RouterDepth = 1 };
        CollectionAssert.AreEquivalent(new[] { "seed", "steps", "learning_rate", "batch_size_per_task", "lambda", "router_depth" }, wemoe.Settings().Keys.ToArray());
        Assert.AreEqual(1e-4, wemoe.Settings()["learning_rate"]);
        Assert.AreEqual(1, wemoe.ToWeightEnsemblingOptions().RouterDepth);
        Assert.IsFalse(wemoe.ToWeightEnsemblingOptions().BatchReduce);

        var reduced = wemoe with { BatchReduce = true };
        Assert.AreEqual(1, reduced.Settings()["batch_reduce"]);
        Assert.IsTrue(reduced.ToWeightEnsemblingOptions().BatchReduce);

        var efficient = new AdaptationJobOptions { Method = AdaptationMethod.EfficientWeightEnsembling, Keep = 0.2 };
        Assert.AreEqual(0.2, efficient.Settings()["keep"]);
        Assert.AreEqual(WeightEnsemblingOptions.Efficient(0.2), efficient.ToWeightEnsemblingOptions());

        var ada = new AdaptationJobOptions { Method = AdaptationMethod.AdaMergingLayerWise, Keep = 0.5, RouterDepth = 7 };
        Assert.AreEqual(1e-3, ada.Settings()["learning_rate"]);
        Assert.IsFalse(ada.Settings().ContainsKey("keep") || ada.Settings().ContainsKey("router_depth"));
        ada.Validate();

        var fisher = new AdaptationJobOptions { Method = AdaptationMethod.Fisher, Steps = -1 };
        CollectionAssert.AreEquivalent(new[] { "seed", "examples_per_task", "epsilon" }, fisher.Settings().Keys.ToArray());
        fisher.Validate();
        Assert.AreEqual(0.95, new AdaptationJobOptions { Method = AdaptationMethod.RegMean }.Settings()["alpha"]);
    }

    [TestMethod]
    public void MethodNamesRoundTripAndUnknownOnesAreRejected()
    {
        foreach (AdaptationMethod method in Enum.GetValues<AdaptationMethod>())
        {
            Assert.AreEqual(method, AdaptationMethods.Parse(method.Name().ToUpperInvariant()));
        }

        Assert.ThrowsExactly<ArgumentException>(() => AdaptationMethods.Parse("wemoe2"));
        var error = Assert.ThrowsExactly<ArgumentException>(() => new AdaptationJobOptions { Method = AdaptationMethod.WeightEnsembling, Steps = 0, LearningRate = -1 }.Validate());
        StringAssert.Contains(error.Message, "Steps must be positive (got 0); the learning rate must be a positive finite number (got -1)");
    }
}
