using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Onnx;
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

    /// <summary>
    /// <c>export-onnx --model &lt;adapter folder&gt; --zoo &lt;pool&gt;</c> writes the pool's base with the adapter's ΔW and the
    /// head of the adapter's task; ONNX Runtime scores like the densified TorchSharp forward.
    /// </summary>
    [TestMethod]
    public void AnAdapterExportsToOnnxWithItsTasksHead()
    {
        string poolDirectory = PoolOf("l-lora");
        using var pool = ExpertPool.Load(poolDirectory, ["road-signs"]);
        string adapter = Path.Combine(poolDirectory, pool.Manifest.Task("road-signs").Expert);
        using var dir = new TempDirectory();
        var (exit, text, error) = CliRunner.Run("export-onnx", "--model", adapter, "--zoo", poolDirectory, "--scores", "logits", "--out", dir.File("m.onnx"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "1 head(s) (road-signs)");

        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(dir.File("m.onnx")));
        using var scope = NewDisposeScope();
        Tensor images = pool.LoadData("road-signs").Test.ToTensor().narrow(0, 0, 16);
        var outputs = runner.Run(DenseVitOnnxExporter.InputName, images.reshape(16, -1));
        Tensor expected = pool.Head("road-signs").Forward(VisionTransformer.Forward(pool.Config, pool.Expert("road-signs"), images));
        float[] onnx = outputs["scores_road-signs"].data<float>().ToArray(), torch = expected.detach().contiguous().data<float>().ToArray();
        Assert.HasCount(torch.Length, onnx);
        Assert.IsLessThanOrEqualTo(1e-4, onnx.Zip(torch, (a, b) => Math.Abs(a - b)).Max());

        (exit, _, error) = CliRunner.Run("export-onnx", "--model", adapter, "--out", dir.File("n.onnx"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "is a LoRA adapter: give --zoo");

        (exit, _, error) = CliRunner.Run("align", "--zoo", poolDirectory, "--out", dir.File("aligned"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "is a LoRA adapter: alignment permutes full checkpoints");
        Assert.IsFalse(Directory.Exists(dir.File("aligned")), "nothing written");
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
