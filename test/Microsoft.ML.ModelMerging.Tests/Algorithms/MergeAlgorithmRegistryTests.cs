using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Tests.Algorithms;

[TestClass]
public sealed class MergeAlgorithmRegistryTests
{
    [TestMethod]
    public void EveryMethodIsRegisteredOnceWithWhatItNeeds()
    {
        var registry = MergeAlgorithmRegistry.Default;
        CollectionAssert.AreEquivalent(
            new[] { "simple-average", "task-arithmetic", "ties", "dare", "tall-masks", "consensus", "emr", "wemoe", "e-wemoe", "adamerging-task", "adamerging-layer", "tact", "fisher", "regmean" },
            registry.Algorithms.Select(a => a.Name).ToArray());
        // Every weight-only method of the streaming registry is reachable through the algorithm registry.
        foreach (var method in MergeMethodRegistry.Default.Methods) Assert.IsInstanceOfType<WeightOnlyAlgorithm>(registry.Get(method.Name));
        Assert.AreEqual(AlgorithmNeeds.PretrainedBase | AlgorithmNeeds.UnlabeledImages, registry.Get("WEMOE").Needs);
        Assert.AreEqual(AlgorithmNeeds.LabeledData, registry.Get("fisher").Needs, "Fisher averages the experts themselves: no base");
        Assert.AreEqual(AlgorithmNeeds.PretrainedBase | AlgorithmNeeds.TaskAtInference, registry.Get("tall-masks").Needs);
        Assert.AreEqual(AlgorithmNeeds.PretrainedBase, registry.Get("ties").Needs);
        // TACT: images of every task and a model per task; a base only when its base method uses one (checked per run).
        Assert.AreEqual(AlgorithmNeeds.UnlabeledImages | AlgorithmNeeds.TaskAtInference, registry.Get("tact").Needs);
        Assert.AreSame(TactAlgorithm.Instance, registry.Get("TACT"));
        // The mean of the experts needs no base: the first expert stands in for one.
        Assert.IsFalse(registry.Get("simple-average").Needs.HasFlag(AlgorithmNeeds.PretrainedBase));
        Assert.AreEqual(AlgorithmNeeds.None, registry.Get("simple-average").Needs);
        var error = Assert.ThrowsExactly<ArgumentException>(() => registry.Get("wemoe2"));
        StringAssert.Contains(error.Message, "Unknown merge method 'wemoe2' (known: simple-average, task-arithmetic");
        Assert.ThrowsExactly<ArgumentException>(() => registry.With(registry.Get("ties")));
    }

    [TestMethod]
    public void ParametersAreDeclaredPerMethodWithTheirDefaults()
    {
        var registry = MergeAlgorithmRegistry.Default;
        var wemoe = registry.Get("wemoe");
        var settings = MergeParameters.Parse("router_depth=1").WithDefaults(wemoe.Parameters);
        CollectionAssert.AreEquivalent(new[] { "steps", "learning-rate", "batch", "lambda", "router-depth", "batch-reduce", "seed" }, settings.Keys.ToArray());
        Assert.AreEqual("1", settings["router-depth"], "'_' and '-' name the same parameter");
        Assert.AreEqual("0.0001", settings["learning-rate"]);
        Assert.AreEqual("1000", settings["steps"]);
        var resolved = MergeParameters.Parse("router-depth=1", "batch-reduce=true").Resolve(wemoe.Name, wemoe.Parameters);
        var options = ((WeightEnsemblingAlgorithm)wemoe).Options(resolved);
        Assert.AreEqual(1, options.RouterDepth);
        Assert.IsTrue(options.BatchReduce);

        var efficient = registry.Get("e-wemoe");
        var keep = ((WeightEnsemblingAlgorithm)efficient).Options(MergeParameters.Parse("keep=0.2").Resolve(efficient.Name, efficient.Parameters));
        Assert.AreEqual(WeightEnsemblingOptions.Efficient(0.2), keep);

        Assert.AreEqual("0.001", MergeParameters.Empty.WithDefaults(registry.Get("adamerging-layer").Parameters)["learning-rate"]);
        var notForAda = Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("keep=0.5").Resolve("adamerging-layer", registry.Get("adamerging-layer").Parameters));
        StringAssert.Contains(notForAda.Message, "Unknown parameter 'keep' for merge method 'adamerging-layer'");
        CollectionAssert.AreEquivalent(new[] { "examples", "epsilon", "seed" }, registry.Get("fisher").Parameters.Select(p => p.Name).ToArray());
        Assert.AreEqual("0.95", MergeParameters.Empty.WithDefaults(registry.Get("regmean").Parameters)["alpha"]);
        var tact = MergeParameters.Empty.WithDefaults(registry.Get("tact").Parameters);
        CollectionAssert.AreEquivalent(new[] { "base-method", "examples", "epsilon", "statistics", "seed", "lambda", "keep" }, tact.Keys.ToArray());
        Assert.AreEqual("simple-average", tact["base-method"]);
        Assert.AreEqual("256", tact["examples"]);
        Assert.AreEqual("channel", tact["statistics"], "the paper's statistics unless asked");
        // Every base method TACT offers is a weight-only method of the registry.
        foreach (string baseMethod in TactAlgorithm.BaseMethods) Assert.IsInstanceOfType<WeightOnlyAlgorithm>(registry.Get(baseMethod), baseMethod);
        var notABase = Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("base-method=wemoe").Resolve("tact", registry.Get("tact").Parameters));
        StringAssert.Contains(notABase.Message, "base-method");

        var bad = Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("steps=0").Resolve(wemoe.Name, wemoe.Parameters));
        StringAssert.Contains(bad.Message, "steps");
        Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("router-depth=3").Resolve(wemoe.Name, wemoe.Parameters));
        Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("learning-rate=-1").Resolve(wemoe.Name, wemoe.Parameters));
    }

    [TestMethod]
    public void SearchGridsParseAndCoverTheMainHyperparameters()
    {
        foreach (var algorithm in MergeAlgorithmRegistry.Default.Algorithms)
        {
            foreach (var (name, values) in algorithm.SearchGrid)
                foreach (string value in values)
                    MergeParameters.Parse($"{name}={value}").Resolve(algorithm.Name, algorithm.Parameters);
        }

        Assert.HasCount(10, MergeAlgorithmRegistry.Default.Get("task-arithmetic").SearchGrid["lambda"]);
        Assert.HasCount(20, MergeCandidate.Grid("ties", MergeAlgorithmRegistry.Default.Get("ties").SearchGrid));
        Assert.HasCount(0, MergeAlgorithmRegistry.Default.Get("wemoe").SearchGrid);
    }

    /// <summary>Typed settings give the string form's parameters, only those set, and every one resolves against its algorithm.</summary>
    [TestMethod]
    public void TypedSettingsAreTheStringFormOfTheirAlgorithm()
    {
        var registry = MergeAlgorithmRegistry.Default;
        AlgorithmSettings[] settings =
        [
            new TaskArithmeticSettings { Lambda = 0.4 },
            new TiesSettings { Keep = 0.1, TrimPerTensor = true, MergeByMean = false },
            new WeightEnsemblingSettings { Steps = 500, RouterDepth = 1, BatchReduce = true, LearningRate = 1e-4 },
            new WeightEnsemblingSettings { Efficient = true, Keep = 0.2 },
            new AdaMergingSettings { TaskWise = true, Steps = 10 },
            new TactSettings { BaseMethod = "ties", PerToken = true, Keep = 0.1, Examples = 64 },
        ];
        foreach (var typed in settings)
        {
            var algorithm = registry.Get(typed.Method);
            typed.ToParameters().Resolve(algorithm.Name, algorithm.Parameters);
        }

        CollectionAssert.AreEquivalent(new[] { "keep=0.1", "trim=per-tensor", "merge-func=sum" },
            settings[1].ToParameters().Values.Select(kv => $"{kv.Key}={kv.Value}").ToArray());
        var wemoe = MergeParameters.Parse("steps=500", "router-depth=1", "batch-reduce=true", "learning-rate=0.0001");
        var wemoeAlgorithm = registry.Get("wemoe");
        CollectionAssert.AreEquivalent(
            wemoe.Resolve("wemoe", wemoeAlgorithm.Parameters).ToText().ToArray(),
            settings[2].ToParameters().Resolve("wemoe", wemoeAlgorithm.Parameters).ToText().ToArray());
        Assert.AreEqual("e-wemoe", settings[3].Method);
        Assert.AreEqual("adamerging-task", settings[4].Method);
        CollectionAssert.AreEquivalent(new[] { "base-method=ties", "statistics=token", "keep=0.1", "examples=64" },
            settings[5].ToParameters().Values.Select(kv => $"{kv.Key}={kv.Value}").ToArray());

        var options = new ModelMerging.MLNet.MergeExpertsOptions().Use(settings[2]);
        Assert.AreEqual("wemoe", options.Method);
        Assert.AreEqual("500", options.Parameters["steps"]);
        Assert.IsFalse(options.Parameters.ContainsKey("lambda"), "unset properties keep the declared default");
    }

    [TestMethod]
    public void ListDescribesEveryAlgorithmWithItsNeeds()
    {
        string list = MergeAlgorithmRegistry.Default.Describe();
        StringAssert.Contains(list, "wemoe: WEMoE");
        StringAssert.Contains(list, "[needs a pre-trained base, unlabeled images per task]");
        StringAssert.Contains(list, "router-depth = 2");
        StringAssert.Contains(list, "fisher: Fisher merging");
        StringAssert.Contains(list, "[needs labeled training examples]");
        StringAssert.Contains(list, "[needs a pre-trained base, the task at inference]");
        StringAssert.Contains(list, "tact: TACT");
        StringAssert.Contains(list, "[needs unlabeled images per task, the task at inference]");
    }
}
