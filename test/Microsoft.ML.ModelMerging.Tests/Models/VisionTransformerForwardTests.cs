using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class VisionTransformerForwardTests
{
    public static IEnumerable<object[]> Configs =>
    [
        [ModelTestData.TinyGray(activation: VisionActivation.QuickGelu)],
        [ModelTestData.TinyGray(layers: 1, activation: VisionActivation.Gelu, projectionDim: 12)],
        [ModelTestData.TinyRgb()],
        [new VisionTransformerConfig { ImageSize = 28, Channels = 1, PatchSize = 4, Width = 16, Layers = 1, Heads = 2, MlpSize = 32 }],
    ];

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void ForwardReturnsOneFeatureVectorPerImage(VisionTransformerConfig config)
    {
        using var scope = NewDisposeScope();
        using var model = VisionTransformer.Create(config, seed: 1);

        Tensor features = model.Forward(ModelTestData.Images(config, batch: 3, seed: 2));

        CollectionAssert.AreEqual(new long[] { 3, config.ProjectionDim ?? config.Width }, features.shape);
        Assert.IsTrue(features.isfinite().all().item<bool>());
    }

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void ParametersHaveTheListedNamesAndShapes(VisionTransformerConfig config)
    {
        using var model = VisionTransformer.Create(config, seed: 1);
        var listed = VisionTransformerNames.Shapes(config);

        // 5 embedding/pre-LN tensors, 16 per block, post-LN weight and bias, and the optional projection.
        Assert.HasCount(5 + 16 * config.Layers + 2 + (config.ProjectionDim is null ? 0 : 1), listed);
        CollectionAssert.AreEqual(listed.Select(s => s.Name).ToList(), model.NamedParameters.Keys.ToList());
        foreach (var (name, shape) in listed)
        {
            CollectionAssert.AreEqual(shape, model.NamedParameters[name].shape, name);
            Assert.AreEqual(ScalarType.Float32, model.NamedParameters[name].dtype, name);
        }
    }

    [TestMethod]
    public void FlattenedChannelMajorImagesGiveTheSameFeatures()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyRgb();
        using var model = VisionTransformer.Create(config, seed: 3);
        Tensor images = ModelTestData.Images(config, batch: 2, seed: 4);

        Tensor flat = model.Forward(images.reshape(2, -1));

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(model.Forward(images), flat));
    }

    [TestMethod]
    public void FunctionalForwardWithAnotherModelsWeightsEqualsThatModel()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray();
        using var first = VisionTransformer.Create(config, seed: 1);
        using var second = VisionTransformer.Create(config, seed: 2);
        Tensor images = ModelTestData.Images(config, batch: 4, seed: 5);

        Tensor substituted = VisionTransformer.Forward(config, second.Weights, images);

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(second.Forward(images), substituted));
        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(first.Forward(images), substituted));
    }

    [TestMethod]
    public void FunctionalForwardWithAveragedWeightsEqualsAModelLoadedWithThem()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray();
        using var first = VisionTransformer.Create(config, seed: 1);
        using var second = VisionTransformer.Create(config, seed: 2);
        var average = first.Weights.ToDictionary(kv => kv.Key, kv => (kv.Value.Plus(second.Weights[kv.Key])).detach().DividedBy(2));
        using var merged = VisionTransformer.FromState(config, average);
        Tensor images = ModelTestData.Images(config, batch: 4, seed: 5);

        Tensor functional = VisionTransformer.Forward(config, average, images);

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(merged.Forward(images), functional));
    }

    [TestMethod]
    [DataRow(VisionActivation.QuickGelu, null)]
    [DataRow(VisionActivation.Gelu, 8)]
    public void OneBlockMatchesTheFloat64Reference(VisionActivation activation, int? projectionDim)
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(layers: 1, activation, projectionDim);
        var weights = ModelTestData.RandomWeights(config, seed: 11);
        Tensor images = ModelTestData.Images(config, batch: 3, seed: 12);

        Tensor actual = VisionTransformer.Forward(config, weights, images);
        Tensor expected = ReferenceVisionTransformer.Forward(config, weights, images);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(actual, expected));
        Assert.IsGreaterThan(0.1, expected.abs().max().item<double>(), "the reference output should not be trivially small");
    }

    [TestMethod]
    public void TwoRgbBlocksWithPerChannelNormalisationMatchTheFloat64Reference()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyRgb(layers: 2);
        var weights = ModelTestData.RandomWeights(config, seed: 21);
        Tensor images = ModelTestData.Images(config, batch: 2, seed: 22);

        Tensor actual = VisionTransformer.Forward(config, weights, images);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(actual, ReferenceVisionTransformer.Forward(config, weights, images)));
    }

    [TestMethod]
    public void Float64WeightsRunInFloat64()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(layers: 1);
        var weights = ModelTestData.RandomWeights(config, seed: 31).ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float64));
        Tensor images = ModelTestData.Images(config, batch: 2, seed: 32);

        Tensor actual = VisionTransformer.Forward(config, weights, images);

        Assert.AreEqual(ScalarType.Float64, actual.dtype);
        Assert.IsLessThan(1e-10, ModelTestData.MaxAbsDiff(actual, ReferenceVisionTransformer.Forward(config, weights, images)));
    }

    [TestMethod]
    public void ImagesOfTheWrongShapeAreRefusedWithTheExpectedShape()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray();
        using var model = VisionTransformer.Create(config, seed: 1);

        var error = Assert.ThrowsExactly<ArgumentException>(() => model.Forward(rand(2, 3, 28, 28)));

        StringAssert.Contains(error.Message, "[2, 3, 28, 28]");
        StringAssert.Contains(error.Message, "[B, 1, 28, 28]");
    }

    [TestMethod]
    public void AMissingOrMisshapenWeightIsNamed()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray();
        var weights = ModelTestData.RandomWeights(config, seed: 1);
        Tensor images = ModelTestData.Images(config, batch: 1, seed: 2);
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).Fc1);

        weights[fc1] = zeros(64, 31);
        var misshapen = Assert.ThrowsExactly<ArgumentException>(() => VisionTransformer.Forward(config, weights, images));
        weights.Remove(fc1);
        var missing = Assert.ThrowsExactly<KeyNotFoundException>(() => VisionTransformer.Forward(config, weights, images));

        StringAssert.Contains(misshapen.Message, $"'{fc1}' has shape [64, 31]; the config expects [64, 32]");
        StringAssert.Contains(missing.Message, $"'{fc1}' is missing");
    }
}
