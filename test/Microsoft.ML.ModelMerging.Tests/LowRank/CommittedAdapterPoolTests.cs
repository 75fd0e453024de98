using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>The LoRA and L-LoRA pools committed beside the default zoo (<c>zoos/default/lora</c>, <c>zoos/default/l-lora</c>).</summary>
[TestClass]
public sealed class CommittedAdapterPoolTests
{
    private static string PoolOf(string mode)
    {
        string pool = Path.Combine(CommittedZoo.Default, mode);
        if (!PoolManifest.Exists(pool)) Assert.Inconclusive($"{pool} is not committed yet: build/zoo-adapters.sh trains it.");
        return pool;
    }

    [TestMethod]
    [DataRow("lora")]
    [DataRow("l-lora")]
    public void AnAdapterExpertReproducesItsRecordedAccuracy(string mode)
    {
        using var pool = ExpertPool.Load(PoolOf(mode), ["scenes"]);
        var task = pool.Manifest.Task("scenes");
        Assert.AreEqual(mode, task.Training!.Mode);
        Assert.IsTrue(pool.IsAdapterExpert("scenes"));
        var accuracy = TaskAccuracy.Evaluate(pool, pool.Config, pool.Expert("scenes"), EvaluationSplit.Test);
        Assert.AreEqual(task.Individual.Test, Math.Round(accuracy.PerTask["scenes"], 4));
    }

    /// <summary>Every L-LoRA adapter keeps A = A0, the initialisation its lora seed gives: the modules share one tangent space.</summary>
    [TestMethod]
    public void LinearisedAdaptersKeepTheSharedInitialisation()
    {
        string directory = PoolOf("l-lora");
        var manifest = PoolManifest.Read(directory);
        var config = manifest.ModelConfig;
        foreach (var task in manifest.Tasks)
        {
            using var scope = NewDisposeScope();
            using var adapter = PeftAdapterFolder.Load(Path.Combine(directory, task.Expert), config);
            Assert.IsTrue(adapter.Options.Linearized, task.Name);
            using var initial = LoraAdapter.Initialize(config, adapter.Options);
            foreach (var m in adapter.Modules)
                Assert.IsTrue(m.A.eq(initial.Module(m.Target.Prefix)!.A).all().item<bool>(), $"{task.Name}: {m.Target.Prefix}");
        }
    }
}
