using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// An adapter trained on a model of another size (e.g. a ViT-B/32 adapter read against a small base) is refused naming the
/// base's size, not the config field that is right.
/// </summary>
[TestClass]
public sealed class PeftAdapterOfAnotherModelTests
{
    private static VisionTransformerConfig Config => ModelCheckpoints.ReadConfig(Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"));

    private static (string Folder, string Weights, Dictionary<string, Tensor> Tensors) Saved(TempDirectory dir)
    {
        using var adapter = LoraAdapter.Initialize(Config, new LoraOptions { Rank = 2, Alpha = 4, Targets = ["q_proj"] });
        string folder = dir.File("adapter");
        PeftAdapterFolder.Save(adapter, folder);
        string weights = Path.Combine(folder, PeftAdapterFolder.WeightsFileName);
        using var file = Checkpoint.Open(weights);
        return (folder, weights, file.ReadAll());
    }

    [TestMethod]
    public void AFactorOfTheRightRankAndAnotherWidthNamesTheBasesWeight()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDirectory();
        var (folder, weights, tensors) = Saved(dir);
        string prefix = VisionTransformerNames.Layer(0).QProj;
        tensors[PeftAdapterFolder.NameOfA(prefix)] = zeros(2, Config.Width * 8);
        SafeTensorsWriter.Save(weights, tensors);

        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, PeftAdapterFolder.NameOfA(prefix));
        StringAssert.Contains(error.Message, $"shape [2, {Config.Width * 8}], expected [2, {Config.Width}]");
        StringAssert.Contains(error.Message, $"the base model's {prefix}.weight is [{Config.Width}, {Config.Width}]");
        StringAssert.Contains(error.Message, "made for another model");
        Assert.DoesNotContain("r = 2", error.Message, "the rank is right");

        // A factor of another rank still names r.
        tensors[PeftAdapterFolder.NameOfA(prefix)] = zeros(3, Config.Width);
        SafeTensorsWriter.Save(weights, tensors);
        error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, "(r = 2 in adapter_config.json)");
    }

    [TestMethod]
    public void AFactorOfALayerTheBaseLacksNamesTheBasesDepth()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDirectory();
        var (folder, weights, tensors) = Saved(dir);
        string prefix = VisionTransformerNames.Layer(Config.Layers + 4).QProj;
        tensors[PeftAdapterFolder.NameOfA(prefix)] = zeros(2, Config.Width);
        tensors[PeftAdapterFolder.NameOfB(prefix)] = zeros(Config.Width, 2);
        SafeTensorsWriter.Save(weights, tensors);

        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, prefix);
        StringAssert.Contains(error.Message, $"the base model has {Config.Layers} layers (0 to {Config.Layers - 1})");
        Assert.DoesNotContain("target_modules", error.Message, "q_proj is a target");
    }
}
