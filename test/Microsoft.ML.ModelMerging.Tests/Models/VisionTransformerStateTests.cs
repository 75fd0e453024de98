using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class VisionTransformerStateTests
{
    private static readonly VisionTransformerConfig Config = ModelTestData.TinyGray(layers: 2, projectionDim: 8);

    [TestMethod]
    public void StateLoadedIntoAnotherModelReproducesItsWeightsAndOutputs()
    {
        using var scope = NewDisposeScope();
        using var source = VisionTransformer.Create(Config, seed: 1);
        using var target = VisionTransformer.Create(Config, seed: 2);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 3);

        var report = target.LoadState(source.State());

        Assert.IsTrue(report.IsComplete, report.Describe());
        Assert.HasCount(VisionTransformerNames.Shapes(Config).Count, report.Matched);
        foreach (var (name, parameter) in source.NamedParameters)
        {
            Assert.IsTrue(ModelTestData.Identical(parameter, target.NamedParameters[name]), name);
        }

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(source.Forward(images), target.Forward(images)));
    }

    [TestMethod]
    public void LoadingCopiesSoTheSourceCanChangeAfterwards()
    {
        using var scope = NewDisposeScope();
        var state = ModelTestData.RandomWeights(Config, seed: 4);
        using var model = VisionTransformer.FromState(Config, state);
        Tensor before = model.NamedParameters[VisionTransformerNames.ClassEmbedding].clone();

        state[VisionTransformerNames.ClassEmbedding].PlusScalarInPlace(1);

        Assert.IsTrue(ModelTestData.Identical(before, model.NamedParameters[VisionTransformerNames.ClassEmbedding]));
    }

    [TestMethod]
    public void SameSeedGivesTheSameModelAndAnotherSeedDoesNot()
    {
        using var scope = NewDisposeScope();
        using var a = VisionTransformer.Create(Config, seed: 7);
        using var b = VisionTransformer.Create(Config, seed: 7);
        using var c = VisionTransformer.Create(Config, seed: 8);
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).Fc1);

        Assert.IsTrue(a.Weights.All(kv => ModelTestData.Identical(kv.Value, b.Weights[kv.Key])));
        Assert.IsFalse(ModelTestData.Identical(a.Weights[fc1], c.Weights[fc1]));
    }

    [TestMethod]
    public void InitialisationFollowsTheDocumentedScheme()
    {
        using var scope = NewDisposeScope();
        using var model = VisionTransformer.Create(ModelTestData.TinyGray(layers: 4), seed: 3);
        var layer = VisionTransformerNames.Layer(2);

        Assert.IsTrue(model.Weights[VisionTransformerNames.Weight(layer.LayerNorm1)].eq(1).all().item<bool>());
        Assert.IsTrue(model.Weights[VisionTransformerNames.Bias(layer.LayerNorm2)].eq(0).all().item<bool>());
        Assert.IsTrue(model.Weights[VisionTransformerNames.Bias(layer.QProj)].eq(0).all().item<bool>());
        Tensor fc1 = model.Weights[VisionTransformerNames.Weight(layer.Fc1)];
        Assert.IsLessThanOrEqualTo(0.04, fc1.abs().max().item<float>(), "truncated at two standard deviations");
        Assert.AreEqual(0.02 * 0.88, fc1.std().item<float>(), 0.002, "std of a normal(0, 0.02) truncated at ±2σ");
    }

    [TestMethod]
    public void HuggingFaceExtrasAreIgnoredAndOtherDtypesConverted()
    {
        using var scope = NewDisposeScope();
        var state = ModelTestData.RandomWeights(Config, seed: 5).ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.BFloat16));
        state[VisionTransformerNames.PositionIds] = arange(Config.TokenCount).unsqueeze(0);
        state["text_model.embeddings.token_embedding.weight"] = zeros(10, 4);
        state["text_projection.weight"] = zeros(8, 4);
        state["logit_scale"] = tensor(4.6f);
        using var model = VisionTransformer.Create(Config, seed: 1);

        var report = model.LoadState(state, strict: true);

        CollectionAssert.AreEquivalent(
            new[] { VisionTransformerNames.PositionIds, "text_model.embeddings.token_embedding.weight", "text_projection.weight", "logit_scale" },
            report.Ignored.ToArray());
        Tensor projection = model.Weights[VisionTransformerNames.VisualProjection];
        Assert.AreEqual(ScalarType.Float32, projection.dtype);
        Assert.IsTrue(ModelTestData.Identical(projection, state[VisionTransformerNames.VisualProjection].to(ScalarType.Float32)));
    }

    [TestMethod]
    public void StrictLoadNamesEveryProblemAndCopiesNothing()
    {
        using var scope = NewDisposeScope();
        var state = ModelTestData.RandomWeights(Config, seed: 6);
        string missing = VisionTransformerNames.Bias(VisionTransformerNames.Layer(1).Fc2);
        string misshapen = VisionTransformerNames.PositionEmbedding;
        state.Remove(missing);
        state[misshapen] = zeros(5, Config.Width);
        state["vision_model.encoder.layers.2.mlp.fc1.weight"] = zeros(64, 32);
        using var model = VisionTransformer.Create(Config, seed: 1);
        Tensor before = model.Weights[VisionTransformerNames.ClassEmbedding].clone();

        var error = Assert.ThrowsExactly<InvalidDataException>(() => model.LoadState(state));

        StringAssert.Contains(error.Message, $"1 missing ({missing})");
        StringAssert.Contains(error.Message, "1 unexpected (vision_model.encoder.layers.2.mlp.fc1.weight)");
        StringAssert.Contains(error.Message, $"{misshapen}: expected [17, 32], got [5, 32]");
        Assert.IsTrue(ModelTestData.Identical(before, model.Weights[VisionTransformerNames.ClassEmbedding]), "a failed strict load must not copy anything");
    }

    [TestMethod]
    public void LenientLoadCopiesWhatMatchesAndReportsTheRest()
    {
        using var scope = NewDisposeScope();
        var state = ModelTestData.RandomWeights(Config, seed: 6);
        state.Remove(VisionTransformerNames.VisualProjection);
        state[VisionTransformerNames.PositionEmbedding] = zeros(5, Config.Width);
        using var model = VisionTransformer.Create(Config, seed: 1);
        Tensor projectionBefore = model.Weights[VisionTransformerNames.VisualProjection].clone();

        var report = model.LoadState(state, strict: false);

        CollectionAssert.AreEqual(new[] { VisionTransformerNames.VisualProjection }, report.Missing.ToArray());
        Assert.AreEqual(VisionTransformerNames.PositionEmbedding, report.Misshapen.Single().Name);
        Assert.IsEmpty(report.Unexpected);
        Assert.IsTrue(ModelTestData.Identical(model.Weights[VisionTransformerNames.ClassEmbedding], state[VisionTransformerNames.ClassEmbedding]));
        Assert.IsTrue(ModelTestData.Identical(model.Weights[VisionTransformerNames.VisualProjection], projectionBefore));
    }

    [TestMethod]
    public void MovingToTheCurrentDeviceKeepsTheModelAndDisposingForbidsUse()
    {
        var model = VisionTransformer.Create(Config, seed: 1);
        Assert.AreSame(model, model.to(CPU));
        Assert.AreEqual(TorchSharp.DeviceType.CPU, model.Device.type);

        model.Dispose();

        Assert.ThrowsExactly<ObjectDisposedException>(() => model.State());
    }

    [TestMethod]
    public void ParametersOutliveTheDisposeScopeTheyWereCreatedIn()
    {
        VisionTransformer model;
        using (NewDisposeScope())
        {
            model = VisionTransformer.Create(Config, seed: 1);
        }

        using (model)
        using (NewDisposeScope())
        {
            Tensor features = model.Forward(ModelTestData.Images(Config, batch: 1, seed: 2));
            CollectionAssert.AreEqual(new long[] { 1, 8 }, features.shape);
        }
    }
}
