using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// A merged adapter records the base it was merged against: <c>eval</c>, <c>merge --expert</c> and <c>pool add --expert</c>
/// refuse to apply it to a base of other content, as <c>export-onnx</c> does, and <c>eval</c> does not apply an adapter to the
/// default zoo's base when no <c>--zoo</c> is given.
/// </summary>
[TestClass]
public sealed class MergedAdapterBaseTests
{
    [TestMethod]
    public void AMergedAdapterIsRefusedOnABaseOfOtherContent()
    {
        string lLora = Path.Combine(CommittedZoo.Default, "l-lora");
        if (!PoolManifest.Exists(lLora)) Assert.Inconclusive($"{lLora} is not committed.");
        var manifest = PoolManifest.Read(lLora);
        string basePath = Path.Combine(lLora, manifest.Pretrained!);
        using var dir = new TempDirectory();
        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--lambda", "0.5", "--param", "adapter-space=factors", "--base", basePath,
            "--expert", Path.Combine(lLora, manifest.Task("scenes").Expert), "--expert", Path.Combine(lLora, manifest.Task("textures").Expert), "--out", dir.File("merged"));
        Assert.AreEqual(0, exit, error);

        // Another base of the same architecture: the pre-trained model with one weight moved.
        using (var scope = NewDisposeScope())
        using (var pretrained = ModelCheckpoints.LoadBackbone(basePath))
        {
            var moved = pretrained.Weights.ToDictionary(kv => kv.Key, kv => kv.Value);
            string name = VisionTransformerNames.Weight(VisionTransformerNames.Layer(0).QProj);
            moved[name] = moved[name] + 0.01f;
            ModelCheckpoints.SaveBackbone(dir.File("other-base.safetensors"), pretrained.Config, moved);
        }
        TestImageFolders.Shapes(dir.File("shapes"), perClass: 10, seed: 2);
        (exit, _, error) = CliRunner.Run("pool", "create", "--base", dir.File("other-base.safetensors"), "--out", dir.File("pool"));
        Assert.AreEqual(0, exit, error);
        (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", dir.File("pool"), "--task", "shapes", "--images", dir.File("shapes"), "--expert", dir.File("other-base.safetensors"), "--probe");
        Assert.AreEqual(0, exit, error);

        (exit, _, error) = CliRunner.Run("eval", "--model", dir.File("merged"), "--zoo", dir.File("pool"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "was merged against the base");
        StringAssert.Contains(error, $"the base of {dir.File("pool")}");

        (exit, _, error) = CliRunner.Run("eval", "--model", dir.File("merged"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is a LoRA adapter: give --zoo");

        (exit, string output, error) = CliRunner.Run("eval", "--model", dir.File("merged"), "--zoo", lLora, "--task", "scenes");
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "scenes");

        (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", dir.File("other-base.safetensors"), "--expert", dir.File("merged"),
            "--out", dir.File("dense.safetensors"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "was merged against the base");
        StringAssert.Contains(error, $"--base ({dir.File("other-base.safetensors")}) has other content");
        Assert.IsFalse(File.Exists(dir.File("dense.safetensors")));
        (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", basePath, "--expert", dir.File("merged"), "--out", dir.File("dense.safetensors"));
        Assert.AreEqual(0, exit, error);

        (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", dir.File("pool"), "--task", "merged", "--images", dir.File("shapes"), "--expert", dir.File("merged"), "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, $"the base of the pool at {dir.File("pool")}");
        Assert.IsFalse(PoolManifest.Read(dir.File("pool")).Tasks.Any(t => t.Name == "merged"), "not registered");
    }
}
