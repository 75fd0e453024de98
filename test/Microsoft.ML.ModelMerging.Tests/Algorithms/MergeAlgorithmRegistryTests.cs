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
        CollectionAssert.AreEquivalent(new[] { "steps", "learning-rate", "batch", "lambda", "router-depth", "batch-reduce", "routing", "task-routing", "diversity", "seed" }, settings.Keys.ToArray());
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

    /// <summary>
    /// One typed settings record per registered algorithm, every declared parameter set off its default, beside the same
    /// settings in the string form.
    /// </summary>
    private static readonly (AlgorithmSettings Typed, string[] Text)[] EveryAlgorithmTyped =
    [
        (new SimpleAverageSettings { MergeLoraFactors = true }, ["adapter-space=factors"]),
        (new TaskArithmeticSettings { Lambda = 0.4, MergeLoraFactors = true }, ["lambda=0.4", "adapter-space=factors"]),
        (new TiesSettings { Lambda = 0.5, Keep = 0.1, TrimPerTensor = true, MergeByMean = true, MergeLoraFactors = true },
            ["lambda=0.5", "keep=0.1", "trim=per-tensor", "merge-func=mean", "adapter-space=factors"]),
        (new DareSettings { DropRate = 0.9, Seed = 7, ThenTies = true, Lambda = 0.7, Keep = 0.3, TrimPerTensor = true, MergeByMean = true, MergeLoraFactors = true },
            ["drop-rate=0.9", "seed=7", "then=ties", "lambda=0.7", "keep=0.3", "trim=per-tensor", "merge-func=mean", "adapter-space=factors"]),
        (new TallMasksSettings { Lambda = 1, TallLambda = [0.2, 0.6] }, ["lambda=1", "tall-lambda=0.2,0.6"]),
        (new ConsensusSettings { Lambda = 0.5, TallLambda = [0.5], MinTasks = 3, MergeLoraFactors = true }, ["lambda=0.5", "tall-lambda=0.5", "min-tasks=3", "adapter-space=factors"]),
        (new EmrSettings(), []),
        (new WeightEnsemblingSettings { Steps = 500, LearningRate = 1e-3, Batch = 8, Lambda = 0.4, RouterDepth = 1, BatchReduce = true, Routing = "softmax", TaskRouting = 2, Diversity = 0.5, Seed = 3 },
            ["steps=500", "learning-rate=0.001", "batch=8", "lambda=0.4", "router-depth=1", "batch-reduce=true", "routing=softmax", "task-routing=2", "diversity=0.5", "seed=3"]),
        (new AdaMergingSettings { Steps = 20, LearningRate = 1e-2, Batch = 4, Lambda = 0.2, Clamp = false, Diversity = 1, Seed = 5 },
            ["steps=20", "learning-rate=0.01", "batch=4", "lambda=0.2", "clamp=false", "diversity=1", "seed=5"]),
        (new WeightEnsemblingSettings { Efficient = true, Steps = 50, LearningRate = 1e-5, Batch = 2, Lambda = 0.6, RouterDepth = 0, BatchReduce = true, Routing = "softmax", TaskRouting = 0.5, Keep = 0.2, Diversity = 3, Seed = 9 },
            ["steps=50", "learning-rate=1e-5", "batch=2", "lambda=0.6", "router-depth=0", "batch-reduce=true", "routing=softmax", "task-routing=0.5", "keep=0.2", "diversity=3", "seed=9"]),
        (new AdaMergingSettings { TaskWise = true, Steps = 10, LearningRate = 5e-3, Batch = 32, Lambda = 0.5, Clamp = false, Diversity = 0.2, Seed = 1 },
            ["steps=10", "learning-rate=0.005", "batch=32", "lambda=0.5", "clamp=false", "diversity=0.2", "seed=1"]),
        (new TactSettings { BaseMethod = "ties", Examples = 64, Epsilon = 1e-6, PerToken = true, Seed = 2, Lambda = 0.5, Keep = 0.1 },
            ["base-method=ties", "examples=64", "epsilon=1e-6", "statistics=token", "seed=2", "lambda=0.5", "keep=0.1"]),
        (new FisherSettings { Examples = 32, Epsilon = 1e-4, Seed = 1 }, ["examples=32", "epsilon=1e-4", "seed=1"]),
        (new RegMeanSettings { Examples = 16, Alpha = 0.5, Seed = 4 }, ["examples=16", "alpha=0.5", "seed=4"]),
    ];

    /// <summary>
    /// Typed settings give the string form's parameters, only those set, and resolve to exactly what the string form
    /// resolves to; <c>MergeExpertsOptions.Use</c> runs the registry's algorithm with them.
    /// </summary>
    [TestMethod]
    public void TypedSettingsAreTheStringFormOfTheirAlgorithm()
    {
        var registry = MergeAlgorithmRegistry.Default;
        foreach (var (typed, text) in EveryAlgorithmTyped)
        {
            var algorithm = registry.Get(typed.Method);
            string[] resolved = Text(typed.ToParameters().Resolve(algorithm.Name, algorithm.Parameters));
            CollectionAssert.AreEquivalent(Text(MergeParameters.Parse(text).Resolve(algorithm.Name, algorithm.Parameters)), resolved, typed.ToString());
            CollectionAssert.AreEquivalent(text.Select(t => t[..t.IndexOf('=')]).ToArray(), typed.ToParameters().Values.Keys.ToArray(), typed.ToString());

            // Every declared parameter is set, off its default: each has a property, and the property reaches it.
            string[] defaults = Text(MergeParameters.Empty.Resolve(algorithm.Name, algorithm.Parameters));
            Assert.IsEmpty(resolved.Intersect(defaults).ToArray(), $"{typed}: a parameter left at its default, or without a property");

            var (used, parameters) = new ModelMerging.MLNet.MergeExpertsOptions().Use(typed).CreateAlgorithm();
            Assert.AreSame(algorithm, used);
            CollectionAssert.AreEquivalent(resolved, Text(parameters.Resolve(used.Name, used.Parameters)), typed.ToString());
        }

        CollectionAssert.AreEquivalent(new[] { "keep=0.1", "trim=per-tensor", "merge-func=sum" },
            Assignments(new TiesSettings { Keep = 0.1, TrimPerTensor = true, MergeByMean = false }));
        CollectionAssert.AreEquivalent(new[] { "then=ties", "trim=global" }, Assignments(new DareSettings { ThenTies = true, TrimPerTensor = false }));
        // Settings that would have no effect are refused by name.
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new DareSettings { ThenTies = false, TrimPerTensor = false }.ToParameters()).Message, "set ThenTies = true");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new DareSettings { Keep = 0.3 }.ToParameters()).Message, "set ThenTies = true");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new WeightEnsemblingSettings { TaskRouting = 1 }.ToParameters()).Message, "TaskRouting needs Routing = \"softmax\"");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new WeightEnsemblingSettings { Keep = 0.2 }.ToParameters()).Message, "set Efficient = true");
        CollectionAssert.AreEquivalent(new[] { "tall-lambda=0.25" }, Assignments(new TallMasksSettings { TallLambda = [0.25] }));
        CollectionAssert.AreEquivalent(new[] { "base-method=ties", "statistics=token", "keep=0.1", "examples=64" },
            Assignments(new TactSettings { BaseMethod = "ties", PerToken = true, Keep = 0.1, Examples = 64 }));
        Assert.AreEqual("e-wemoe", new WeightEnsemblingSettings { Efficient = true }.Method);
        Assert.AreEqual("adamerging-task", new AdaMergingSettings { TaskWise = true }.Method);

        var options = new ModelMerging.MLNet.MergeExpertsOptions().Use(new WeightEnsemblingSettings { Steps = 500 });
        Assert.AreEqual("wemoe", options.Method);
        Assert.AreEqual("500", options.Parameters["steps"]);
        Assert.IsFalse(options.Parameters.ContainsKey("lambda"), "unset properties keep the declared default");
    }

    /// <summary>Every registered algorithm has typed settings, and every typed settings record is checked above.</summary>
    [TestMethod]
    public void EveryRegisteredAlgorithmHasTypedSettings()
    {
        string[] typed = [.. EveryAlgorithmTyped.Select(entry => entry.Typed.Method)];
        string[] untyped = [.. MergeAlgorithmRegistry.Default.Algorithms.Select(a => a.Name).Except(typed, StringComparer.OrdinalIgnoreCase)];
        Assert.IsEmpty(untyped, "registered without typed settings: " + string.Join(", ", untyped));
        CollectionAssert.AreEquivalent(MergeAlgorithmRegistry.Default.Algorithms.Select(a => a.Name).ToArray(), typed);

        var records = typeof(AlgorithmSettings).Assembly.GetExportedTypes()
            .Where(type => type.IsSubclassOf(typeof(AlgorithmSettings)) && !type.IsAbstract)
            .ToArray();
        CollectionAssert.AreEquivalent(records, EveryAlgorithmTyped.Select(entry => entry.Typed.GetType()).Distinct().ToArray());
        foreach (var type in records)
        {
            // Nothing set, nothing given: every parameter takes the registry's default.
            var unset = (AlgorithmSettings)Activator.CreateInstance(type)!;
            Assert.IsEmpty(unset.ToParameters().Values, type.Name);
        }
    }

    private static string[] Text(ResolvedMergeParameters parameters) => [.. parameters.ToText().Select(kv => $"{kv.Key}={kv.Value}")];

    private static string[] Assignments(AlgorithmSettings settings) => [.. settings.ToParameters().Values.Select(kv => $"{kv.Key}={kv.Value}")];

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
