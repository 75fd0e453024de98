using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class ModelCheckpointsTests
{
    [TestMethod]
    public void BackboneRoundTripsThroughSafetensorsWithItsConfig()
    {
        using var dir = new TempDirectory();
        var config = ModelTestData.TinyRgb();
        using var model = VisionTransformer.Create(config, seed: 11);
        ModelCheckpoints.SaveBackbone(dir.File("vit.safetensors"), model, new Dictionary<string, string> { ["note"] = "x" });

        using var loaded = ModelCheckpoints.LoadBackbone(dir.File("vit.safetensors"));
        Assert.AreEqual(config, loaded.Config);
        Assert.AreEqual("x", loaded.Metadata["note"]);
        CollectionAssert.AreEquivalent(model.Weights.Keys.ToArray(), loaded.Weights.Keys.ToArray());
        foreach (var (name, expected) in model.Weights)
            CollectionAssert.AreEqual(expected.data<float>().ToArray(), loaded.Weights[name].data<float>().ToArray(), name);

        using var scope = NewDisposeScope();
        var images = ModelTestData.Images(config, 3, seed: 2);
        var a = model.Forward(images).data<float>().ToArray();
        var b = VisionTransformer.Forward(loaded.Config, loaded.Weights, images).data<float>().ToArray();
        CollectionAssert.AreEqual(a, b);
    }

    [TestMethod]
    public void HuggingFaceStyleCheckpointLoadsWithConfigJsonBesideIt()
    {
        using var dir = new TempDirectory();
        var config = ModelTestData.TinyGray();
        using var model = VisionTransformer.Create(config, seed: 5);
        using var positionIds = arange(0L, config.TokenCount).unsqueeze(0);
        var tensors = new Dictionary<string, Tensor>(model.Weights) { [VisionTransformerNames.PositionIds] = positionIds };
        SafeTensorsWriter.Save(dir.File("model.safetensors"), tensors, floatType: SafeTensorsDType.BF16);
        File.WriteAllText(dir.File("config.json"), """
            {"architectures": ["CLIPVisionModel"], "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "patch_size": 7, "image_size": 28, "num_channels": 1, "hidden_act": "quick_gelu",
             "layer_norm_eps": 1e-5}
            """);

        using var loaded = ModelCheckpoints.LoadBackbone(dir.Path);
        Assert.AreEqual(32, loaded.Config.Width);
        Assert.IsFalse(loaded.Weights.ContainsKey(VisionTransformerNames.PositionIds));
        // Stored as BF16: every weight equals the float32 original rounded to bf16.
        var original = model.Weights[VisionTransformerNames.PatchEmbedding].to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
        CollectionAssert.AreEqual(original.data<float>().ToArray(), loaded.Weights[VisionTransformerNames.PatchEmbedding].data<float>().ToArray());
    }

    [TestMethod]
    public void CheckpointWithoutAnyConfigIsRejectedByName()
    {
        using var dir = new TempDirectory();
        using var t = zeros(2);
        SafeTensorsWriter.Save(dir.File("bare.safetensors"), new Dictionary<string, Tensor> { ["x"] = t });
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => ModelCheckpoints.LoadBackbone(dir.File("bare.safetensors")).Dispose());
        StringAssert.Contains(error.Message, "bare.safetensors: no model config");
    }

    [TestMethod]
    public void CheckpointMissingATensorIsRejectedWithItsName()
    {
        using var dir = new TempDirectory();
        var config = ModelTestData.TinyGray();
        using var model = VisionTransformer.Create(config, seed: 5);
        var weights = model.Weights.Where(kv => kv.Key != "vision_model.encoder.layers.1.mlp.fc2.bias").ToDictionary();
        ModelCheckpoints.SaveBackbone(dir.File("partial.safetensors"), config, weights);
        var error = Assert.Throws<Exception>(() => ModelCheckpoints.LoadBackbone(dir.File("partial.safetensors")).Dispose());
        StringAssert.Contains(error.Message, "vision_model.encoder.layers.1.mlp.fc2.bias");
    }

    [TestMethod]
    public void HeadRoundTripsWithClassNames()
    {
        using var dir = new TempDirectory();
        using var head = ClassificationHead.CreateLinear(new[] { "cat", "dog", "émeu" }, featureDim: 8, seed: 3);
        ModelCheckpoints.SaveHead(dir.File("head.safetensors"), head);
        using var loaded = ModelCheckpoints.LoadHead(dir.File("head.safetensors"));
        CollectionAssert.AreEqual(new[] { "cat", "dog", "émeu" }, loaded.ClassNames.ToArray());
        using var features = randn(4, 8, generator: new Generator(1));
        using var a = head.Forward(features);
        using var b = loaded.Forward(features);
        CollectionAssert.AreEqual(a.data<float>().ToArray(), b.data<float>().ToArray());
    }

    /// <summary>Loading inside a caller's dispose scope must not hand the loaded tensors to that scope.</summary>
    [TestMethod]
    public void LoadedTensorsOutliveTheCallersDisposeScope()
    {
        using var dir = new TempDirectory();
        var config = ModelTestData.TinyGray();
        using (var model = VisionTransformer.Create(config, seed: 2)) ModelCheckpoints.SaveBackbone(dir.File("b.safetensors"), model);
        using (var head = ClassificationHead.CreateLinear(new[] { "a", "b" }, config.FeatureDim, seed: 1)) ModelCheckpoints.SaveHead(dir.File("h.safetensors"), head);

        LoadedBackbone backbone;
        ClassificationHead loadedHead;
        using (NewDisposeScope())
        {
            backbone = ModelCheckpoints.LoadBackbone(dir.File("b.safetensors"));
            loadedHead = ModelCheckpoints.LoadHead(dir.File("h.safetensors"));
        }
        using (backbone)
        using (loadedHead)
        using (NewDisposeScope())
        {
            var logits = loadedHead.Forward(VisionTransformer.Forward(backbone.Config, backbone.Weights, ModelTestData.Images(config, 2, seed: 1)));
            CollectionAssert.AreEqual(new long[] { 2, 2 }, logits.shape);
        }
    }
}
