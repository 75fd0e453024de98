using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class VisionTransformerConfigTests
{
    [TestMethod]
    public void JsonRoundTripKeepsEveryField()
    {
        var config = ModelTestData.TinyRgb() with { LayerNormEps = 1e-6 };

        string json = config.ToJson();
        var back = VisionTransformerConfig.FromJson(json);

        Assert.AreEqual(config, back);
        Assert.AreEqual(config.GetHashCode(), back.GetHashCode());
        StringAssert.Contains(json, "\"activation\":\"gelu\"");
        StringAssert.Contains(json, "\"patch_size\":4");
        StringAssert.Contains(json, "\"projection_dim\":10");
        Assert.DoesNotContain("feature_dim", json, "derived values are not stored");
    }

    [TestMethod]
    public void JsonDefaultsAreQuickGeluNoProjectionAndHalfNormalisation()
    {
        var config = VisionTransformerConfig.FromJson(
            """{"image_size":28,"channels":1,"patch_size":7,"width":64,"layers":4,"heads":4,"mlp_size":256}""");

        Assert.AreEqual(VisionActivation.QuickGelu, config.Activation);
        Assert.IsNull(config.ProjectionDim);
        Assert.AreEqual(1e-5, config.LayerNormEps);
        CollectionAssert.AreEqual(new[] { 0.5f }, config.MeanPerChannel());
        Assert.AreEqual(17, config.TokenCount);
        Assert.AreEqual(16, config.HeadSize);
    }

    [TestMethod]
    public void JsonMissingARequiredFieldOrWithAnUnknownActivationIsRefused()
    {
        var missing = Assert.ThrowsExactly<FormatException>(() => VisionTransformerConfig.FromJson(
            """{"image_size":28,"channels":1,"patch_size":7,"layers":4,"heads":4,"mlp_size":256}"""));
        var activation = Assert.ThrowsExactly<FormatException>(() => VisionTransformerConfig.FromJson(
            """{"image_size":28,"channels":1,"patch_size":7,"width":64,"layers":4,"heads":4,"mlp_size":256,"activation":"relu"}"""));

        StringAssert.Contains(missing.Message, "width");
        StringAssert.Contains(missing.Message, VisionTransformerConfig.MetadataKey);
        StringAssert.Contains(activation.Message, "activation");
    }

    [TestMethod]
    [DataRow(30, 7, 64, 4, 1, "ImageSize 30 is not a multiple of PatchSize 7")]
    [DataRow(28, 7, 60, 8, 1, "Width 60 is not a multiple of Heads 8")]
    [DataRow(28, 7, 64, 4, 2, "Channels must be 1 or 3 (got 2)")]
    [DataRow(28, 0, 64, 4, 1, "PatchSize must be positive (got 0)")]
    public void InconsistentShapesAreNamed(int imageSize, int patchSize, int width, int heads, int channels, string expected)
    {
        var config = new VisionTransformerConfig
        {
            ImageSize = imageSize, Channels = channels, PatchSize = patchSize, Width = width, Layers = 2, Heads = heads, MlpSize = 32,
            Mean = [0.5f], Std = [0.5f],
        };

        var error = Assert.ThrowsExactly<ArgumentException>(config.Validate);

        StringAssert.Contains(error.Message, expected);
    }

    [TestMethod]
    public void BadNormalisationAndProjectionAreNamed()
    {
        var config = ModelTestData.TinyRgb() with { Mean = [0.5f, 0.5f], Std = [0.2f, 0f, 0.2f], ProjectionDim = 0 };

        var error = Assert.ThrowsExactly<ArgumentException>(config.Validate);

        StringAssert.Contains(error.Message, "Mean needs 1 or 3 (Channels) values (got 2)");
        StringAssert.Contains(error.Message, "Std values must be positive and finite (got [0.2, 0, 0.2])");
        StringAssert.Contains(error.Message, "ProjectionDim must be positive or null (got 0)");
    }

    [TestMethod]
    public void HuggingFaceClipModelConfigReadsTheVisionTowerAndTheProjection()
    {
        const string json = """
            {
              "architectures": ["CLIPModel"],
              "projection_dim": 512,
              "text_config": { "hidden_size": 512 },
              "vision_config": {
                "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                "patch_size": 32, "image_size": 224, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "projection_dim": 512
              }
            }
            """;

        var config = VisionTransformerConfig.FromHuggingFaceConfig(json);

        Assert.AreEqual(new VisionTransformerConfig
        {
            ImageSize = 224, Channels = 3, PatchSize = 32, Width = 768, Layers = 12, Heads = 12, MlpSize = 3072,
            Activation = VisionActivation.QuickGelu, LayerNormEps = 1e-5, ProjectionDim = 512,
            Mean = VisionTransformerConfig.ClipMean, Std = VisionTransformerConfig.ClipStd,
        }, config);
        Assert.AreEqual(50, config.TokenCount);
    }

    [TestMethod]
    public void HuggingFaceVisionModelConfigHasNoProjectionAndReadsThePreprocessor()
    {
        const string json = """
            {
              "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
              "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
              "patch_size": 14, "image_size": 224, "hidden_act": "gelu", "projection_dim": 768
            }
            """;
        const string preprocessor = """{ "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25] }""";

        var config = VisionTransformerConfig.FromHuggingFaceConfig(json, preprocessorConfigJson: preprocessor);
        var withProjection = VisionTransformerConfig.FromHuggingFaceConfig(json, withProjection: true);

        Assert.IsNull(config.ProjectionDim);
        Assert.AreEqual(768, withProjection.ProjectionDim);
        Assert.AreEqual(VisionActivation.Gelu, config.Activation);
        Assert.AreEqual(257, config.TokenCount);
        CollectionAssert.AreEqual(new[] { 0.25f, 0.25f, 0.25f }, config.StdPerChannel());
    }

    [TestMethod]
    public void HuggingFaceTanhGeluIsRefusedByName()
    {
        var error = Assert.ThrowsExactly<FormatException>(() =>
            VisionTransformerConfig.FromHuggingFaceConfig("""{ "vision_config": { "hidden_act": "gelu_pytorch_tanh" } }"""));

        StringAssert.Contains(error.Message, "gelu_pytorch_tanh");
    }
}
