using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class ForwardHooksTests
{
    private static readonly VisionTransformerConfig Config = ModelTestData.TinyGray(layers: 2, VisionActivation.Gelu, projectionDim: 8);

    [TestMethod]
    public void MlpOverrideComputingTheDefaultMlpReproducesTheDefaultOutput()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 1);
        Tensor images = ModelTestData.Images(Config, batch: 3, seed: 2);
        var calls = new List<(int Block, long[] Shape)>();
        Tensor W(string name) => weights[name];
        var hooks = new ForwardHooks
        {
            MlpOverride = (block, input) =>
            {
                calls.Add((block, input.shape));
                var names = VisionTransformerNames.Layer(block);
                Tensor hidden = ReferenceVisionTransformer.Affine(input, W, names.Fc1);
                return ReferenceVisionTransformer.Affine(ReferenceVisionTransformer.Activation(Config.Activation, hidden), W, names.Fc2);
            },
        };

        Tensor overridden = VisionTransformer.Forward(Config, weights, images, hooks);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), overridden));
        CollectionAssert.AreEqual(new[] { 0, 1 }, calls.Select(c => c.Block).ToArray());
        Assert.IsTrue(calls.All(c => c.Shape.SequenceEqual(new long[] { 3, Config.TokenCount, Config.Width })));
    }

    [TestMethod]
    public void MlpOverrideReturningZerosEqualsAModelWhoseFc2IsZeroAndNeedsNoMlpWeights()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 3);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 4);
        var zeroFc2 = new Dictionary<string, Tensor>(weights);
        var withoutMlp = new Dictionary<string, Tensor>(weights);
        for (int block = 0; block < Config.Layers; block++)
        {
            var names = VisionTransformerNames.Layer(block);
            zeroFc2[VisionTransformerNames.Weight(names.Fc2)] = zeros_like(weights[VisionTransformerNames.Weight(names.Fc2)]);
            zeroFc2[VisionTransformerNames.Bias(names.Fc2)] = zeros_like(weights[VisionTransformerNames.Bias(names.Fc2)]);
            foreach (string prefix in new[] { names.Fc1, names.Fc2 })
            {
                withoutMlp.Remove(VisionTransformerNames.Weight(prefix));
                withoutMlp.Remove(VisionTransformerNames.Bias(prefix));
            }
        }

        var hooks = new ForwardHooks { MlpOverride = (_, input) => zeros_like(input) };
        Tensor overridden = VisionTransformer.Forward(Config, withoutMlp, images, hooks);

        Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, zeroFc2, images), overridden));
        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), overridden));
    }

    [TestMethod]
    public void MlpOverrideReturningNullKeepsTheDefaultMlp()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 5);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 6);

        Tensor result = VisionTransformer.Forward(Config, weights, images, new ForwardHooks { MlpOverride = (_, _) => null });

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), result));
    }

    [TestMethod]
    public void IdentitySiteTransformLeavesTheOutputUnchangedAndSeesEverySiteInOrder()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 7);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 8);
        var seen = new List<(ActivationSite Site, int Block, long Channels)>();
        var hooks = new ForwardHooks
        {
            SiteTransform = (site, block, activation) =>
            {
                seen.Add((site, block, activation.shape[^1]));
                return activation;
            },
        };

        Tensor result = VisionTransformer.Forward(Config, weights, images, hooks);

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), result));
        var expected = new List<(ActivationSite, int, long)> { (ActivationSite.Embeddings, -1, Config.Width) };
        for (int block = 0; block < Config.Layers; block++)
        {
            expected.Add((ActivationSite.AttentionContext, block, Config.Width));
            expected.Add((ActivationSite.MlpInput, block, Config.Width));
            expected.Add((ActivationSite.MlpHidden, block, Config.MlpSize));
            expected.Add((ActivationSite.BlockOutput, block, Config.Width));
        }

        CollectionAssert.AreEqual(expected, seen);
    }

    [TestMethod]
    [DataRow(ActivationSite.Embeddings, -1)]
    [DataRow(ActivationSite.AttentionContext, 0)]
    [DataRow(ActivationSite.MlpInput, 1)]
    [DataRow(ActivationSite.MlpHidden, 0)]
    [DataRow(ActivationSite.BlockOutput, 0)]
    public void ScalingOneSiteChangesOnlyWhatComesAfterIt(ActivationSite scaledSite, int scaledBlock)
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 9);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 10);

        var (plainOutput, plain) = Record(weights, images, scaleAt: null);
        var (scaledOutput, scaled) = Record(weights, images, scaleAt: (scaledSite, scaledBlock));

        int scaledIndex = plain.FindIndex(r => r.Site == scaledSite && r.Block == scaledBlock);
        Assert.IsGreaterThanOrEqualTo(0, scaledIndex);
        for (int i = 0; i < plain.Count; i++)
        {
            double difference = ModelTestData.MaxAbsDiff(plain[i].Activation, scaled[i].Activation);
            string where = $"{plain[i].Site} of block {plain[i].Block}";
            if (i <= scaledIndex)
            {
                Assert.AreEqual(0.0, difference, $"{where} is upstream of the scaled site and must not change");
            }
            else
            {
                Assert.IsGreaterThan(1e-4, difference, $"{where} is downstream of the scaled site and must change");
            }
        }

        Assert.IsGreaterThan(1e-4, ModelTestData.MaxAbsDiff(plainOutput, scaledOutput));
    }

    /// <summary>Runs the forward recording every site's incoming activation, optionally scaling one site per channel.</summary>
    private static (Tensor Output, List<(ActivationSite Site, int Block, Tensor Activation)> Records) Record(
        Dictionary<string, Tensor> weights, Tensor images, (ActivationSite Site, int Block)? scaleAt)
    {
        var records = new List<(ActivationSite, int, Tensor)>();
        var hooks = new ForwardHooks
        {
            SiteTransform = (site, block, activation) =>
            {
                records.Add((site, block, activation.clone()));
                return scaleAt == (site, block) ? activation * ModelTestData.ChannelScale(activation) : activation;
            },
        };
        return (VisionTransformer.Forward(Config, weights, images, hooks), records);
    }

    [TestMethod]
    public void SiteTransformChangingTheShapeIsRefusedWithTheSiteNamed()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 11);
        var hooks = new ForwardHooks { SiteTransform = (site, _, a) => site == ActivationSite.MlpHidden ? a[.., 1..] : a };

        var error = Assert.ThrowsExactly<InvalidOperationException>(() =>
            VisionTransformer.Forward(Config, weights, ModelTestData.Images(Config, 1, seed: 12), hooks));

        StringAssert.Contains(error.Message, "MlpHidden of block 0");
    }

    [TestMethod]
    public void LinearAdapterAddingZeroChangesNothingAndSeesEveryBlockLinearInOrder()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 13);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 14);
        var names = new List<string>();
        var hooks = new ForwardHooks
        {
            LinearAdapter = (name, input, output) =>
            {
                names.Add(name);
                return output.Plus(zeros_like(output));
            },
        };

        Tensor result = VisionTransformer.Forward(Config, weights, images, hooks);

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), result));
        var expected = Enumerable.Range(0, Config.Layers).SelectMany(i => VisionTransformerNames.Layer(i).Linears).ToList();
        CollectionAssert.AreEqual(expected, names);
        Assert.AreEqual("vision_model.encoder.layers.1.mlp.fc1", names[10]);
    }

    [TestMethod]
    public void LoraAdapterEqualsAddingTheLowRankProductToTheWeights()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 15);
        Tensor images = ModelTestData.Images(Config, batch: 2, seed: 16);
        var generator = new TorchSharp.torch.Generator(17);
        var adapted = new Dictionary<string, (Tensor A, Tensor B)>
        {
            [VisionTransformerNames.Layer(0).VProj] = (randn(2, Config.Width, generator: generator), randn(Config.Width, 2, generator: generator).Times(0.2)),
            [VisionTransformerNames.Layer(1).Fc1] = (randn(2, Config.Width, generator: generator), randn(Config.MlpSize, 2, generator: generator).Times(0.2)),
        };
        var mergedWeights = new Dictionary<string, Tensor>(weights);
        foreach (var (prefix, (a, b)) in adapted)
        {
            string weight = VisionTransformerNames.Weight(prefix);
            mergedWeights[weight] = weights[weight].Plus(b.matmul(a));
        }

        var hooks = new ForwardHooks
        {
            LinearAdapter = (name, input, output) =>
                adapted.TryGetValue(name, out var lora) ? output.Plus(input.matmul(lora.A.t()).matmul(lora.B.t())) : output,
        };
        Tensor withAdapter = VisionTransformer.Forward(Config, weights, images, hooks);

        Assert.IsLessThan(1e-4, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, mergedWeights, images), withAdapter));
        Assert.IsGreaterThan(1e-2, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), withAdapter));
    }
}
