using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// <c>mlmerge eval</c> applies an adapter to the base of the pool it is given: a merged adapter recording another base is
/// refused, as <c>export-onnx</c> refuses it, and an adapter without <c>--zoo</c> is not applied to the default zoo's base.
/// </summary>
[TestClass]
public sealed class MergedAdapterBaseTests
{
    [TestMethod]
    public void EvalRefusesAMergedAdapterOnAPoolOfAnotherBase()
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
        StringAssert.Contains(error, dir.File("pool") + " has another base");

        (exit, _, error) = CliRunner.Run("eval", "--model", dir.File("merged"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is a LoRA adapter: give --zoo");

        (exit, string output, error) = CliRunner.Run("eval", "--model", dir.File("merged"), "--zoo", lLora, "--task", "scenes");
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "scenes");
    }
}
