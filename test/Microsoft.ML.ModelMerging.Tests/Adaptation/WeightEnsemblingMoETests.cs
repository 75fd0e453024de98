using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

[TestClass]
public sealed class WeightEnsemblingMoETests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void DepthZeroRouterReproducesTaskArithmeticFeaturesAndLogits()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, new WeightEnsemblingOptions { RouterDepth = 0 });
        Tensor images = data.Tasks[0].Images;

        Tensor expected = VisionTransformer.Forward(data.Config, data.TaskArithmetic(), images);
        Tensor actual = model.Forward(images);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(expected, actual));
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(data.Tasks[0].Head.Forward(expected), data.Tasks[0].Head.Forward(actual)));
        CollectionAssert.AreEquivalent(new[] { "router.layers.0.weight", "router.layers.1.weight" }, model.RouterParameters.Keys.ToArray());
        Assert.IsTrue(model.RouterParameters.Values.All(r => ModelTestData.Identical(full(3, 0.3f), r.detach())));
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(2)]
    public void DeeperRoutersStartAsTaskArithmetic(int depth)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        Tensor images = data.Tasks[1].Images;
        Tensor taskArithmetic = VisionTransformer.Forward(data.Config, data.TaskArithmetic(), images);

        // Default init: weights ~ N(0, 0.01²), hidden bias 0, output bias λ exactly.
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, new WeightEnsemblingOptions { RouterDepth = depth });
        foreach (var (name, parameter) in model.RouterParameters)
        {
            Tensor value = parameter.detach();
            if (name.EndsWith(depth == 1 ? "fc.bias" : "fc2.bias", StringComparison.Ordinal))
            {
                Assert.IsTrue(ModelTestData.Identical(full(2, 0.3f), value), name);
            }
            else if (name.EndsWith("bias", StringComparison.Ordinal))
            {
                Assert.AreEqual(0.0, value.abs().max().item<float>(), name);
            }
            else
            {
                Assert.AreEqual(0.01, value.std().item<float>(), 0.002, name);
            }
        }

        // The routing weights differ from λ only by the small random weights' response to the MLP input.
        var (features, routing) = model.ForwardWithRouting(images);
        CollectionAssert.AreEqual(new long[] { data.Config.Layers, images.shape[0], 2 }, routing.shape);
        // (Measured here: at most 0.047 for depth 1, 0.001 for depth 2; features of magnitude up to 2.5.)
        Assert.IsLessThan(0.1, (routing.MinusScalar(0.3)).abs().max().item<float>());
        Assert.IsLessThan(0.1, ModelTestData.MaxAbsDiff(taskArithmetic, features));

        // With zero weights the router output is exactly λ and the model is task arithmetic.
        using var exact = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList,
            new WeightEnsemblingOptions { RouterDepth = depth, RouterInitStd = 0 });
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(taskArithmetic, exact.Forward(images)));
    }

    [TestMethod]
    [DataRow(1, false)]
    [DataRow(2, false)]
    [DataRow(2, true)]
    public void BatchedPerSampleRoutingEqualsAPerSampleLoop(int depth, bool shareRouter)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        // Large router weights so that samples are routed very differently.
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList,
            new WeightEnsemblingOptions { RouterDepth = depth, RouterInitStd = 0.5, ShareRouter = shareRouter, Seed = 7 });
        Tensor images = data.Tasks[0].Images.narrow(0, 0, 6);

        var (features, routing) = model.ForwardWithRouting(images);
        Tensor reference = ReferenceWeightEnsembling.PerSampleLoop(model, data, images);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(reference, features));
        Assert.IsGreaterThan(0.1, (routing.max(1).values - routing.min(1).values).min().item<float>(), "samples should be routed differently");
    }

    /// <summary>
    /// Softmax routing: every MLP is a convex combination of the experts' MLPs. It starts at their mean (the output bias
    /// is 0, not λ) while the other tensors are task arithmetic, and with random routers equals the per-sample reference.
    /// </summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(2)]
    public void SoftmaxRoutingIsAConvexCombinationStartingAtTheExpertsMean(int depth)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        Tensor images = data.Tasks[0].Images.narrow(0, 0, 6);

        using var start = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList,
            new WeightEnsemblingOptions { RouterDepth = depth, RouterInitStd = 0, SoftmaxRouting = true });
        var weights = data.TaskArithmetic();
        foreach (var name in weights.Keys.Where(VisionTransformerNames.IsMlp).ToList()) weights[name] = data.Combine(name, [1.0 / 3, 1.0 / 3, 1.0 / 3]);
        var (features, routing) = start.ForwardWithRouting(images);
        Assert.IsLessThan(1e-6, (routing.MinusScalar(1.0 / 3)).abs().max().item<float>(), "equal weights at the start");
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(data.Config, weights, images), features));

        using var random = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList,
            new WeightEnsemblingOptions { RouterDepth = depth, RouterInitStd = 0.5, SoftmaxRouting = true, Seed = 7 });
        var (routedFeatures, routed) = random.ForwardWithRouting(images);
        Assert.IsTrue(routed.ge(0).all().item<bool>(), "weights are non-negative");
        Assert.IsLessThan(1e-5, (routed.sum([2]).MinusScalar(1)).abs().max().item<float>(), "weights sum to one per sample and block");
        Assert.IsGreaterThan(0.05, (routed.max(2).values - routed.min(2).values).min().item<float>(), "samples are routed unevenly");
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(ReferenceWeightEnsembling.PerSampleLoop(random, data, images), routedFeatures));
    }

    [TestMethod]
    public void BatchReduceEqualsRoutingOnTheBatchMeanOfRoutingWeights()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        var options = new WeightEnsemblingOptions { RouterInitStd = 0.5, BatchReduce = true, Seed = 3 };
        using var reduced = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options);
        using var perSample = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options with { BatchReduce = false });
        Tensor images = data.Tasks[1].Images.narrow(0, 0, 5);

        Tensor features = reduced.Forward(images);

        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(ReferenceWeightEnsembling.BatchMeanRouting(reduced, data, images), features));
        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(perSample.Forward(images), features), "batch reduction should change the outputs");
    }

    [TestMethod]
    public void EfficientVariantPrunesEveryMlpTaskVectorPerTensorAndSharesOneRouter()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, WeightEnsemblingOptions.Efficient());

        Assert.AreEqual(0.1, model.Options.TaskVectorKeep);
        Assert.IsTrue(model.RouterParameters.Keys.All(k => k.StartsWith("router.shared.fc", StringComparison.Ordinal)));
        Assert.HasCount(4, model.RouterParameters);
        for (int block = 0; block < data.Config.Layers; block++)
        {
            var layer = VisionTransformerNames.Layer(block);
            foreach (string name in new[] { layer.Fc1, layer.Fc2 }.SelectMany(p => new[] { VisionTransformerNames.Weight(p), VisionTransformerNames.Bias(p) }))
            {
                Tensor stacked = model.MlpTaskVectors(name);
                Assert.IsTrue(ModelTestData.Identical(data.Pretrained[name], model.PretrainedMlpTensor(name)), name);
                for (int expert = 0; expert < 2; expert++)
                {
                    float[] tau = (data.Experts[expert][name] - data.Pretrained[name]).flatten().data<float>().ToArray();
                    float[] kept = stacked[expert].flatten().data<float>().ToArray();
                    // The project's rule: with m = ⌊0.1·n⌋, the m+1 largest magnitudes are kept (no ties in random data).
                    int m = (int)Math.Floor(0.1 * tau.Length);
                    float threshold = tau.Select(Math.Abs).OrderDescending().ElementAt(m);
                    float[] expected = [.. tau.Select(v => Math.Abs(v) >= threshold ? v : 0f)];
                    CollectionAssert.AreEqual(expected, kept, $"{name}, expert {expert}");
                    Assert.AreEqual(m + 1, kept.Count(v => v != 0), $"{name}, expert {expert}");
                }
            }
        }

        // Everything outside the MLPs is task arithmetic of the dense task vectors.
        var taskArithmetic = data.TaskArithmetic();
        foreach (var (name, tensor) in model.MergedWeights)
        {
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(taskArithmetic[name], tensor), name);
        }

        Assert.IsFalse(model.MergedWeights.Keys.Any(k => k.Contains(".mlp.", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void EfficientModelAtInitIsTaskArithmeticWithPrunedMlpTaskVectors()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList,
            WeightEnsemblingOptions.Efficient(keep: 0.25) with { RouterDepth = 0 });
        var expected = data.TaskArithmetic();
        for (int block = 0; block < data.Config.Layers; block++)
        {
            var layer = VisionTransformerNames.Layer(block);
            foreach (string name in new[] { layer.Fc1, layer.Fc2 }.SelectMany(p => new[] { VisionTransformerNames.Weight(p), VisionTransformerNames.Bias(p) }))
            {
                Tensor sum = zeros_like(data.Pretrained[name]);
                foreach (var expert in data.Experts)
                {
                    sum = sum.Plus(MagnitudePruning.Prune(expert[name] - data.Pretrained[name], 0.25));
                }

                expected[name] = data.Pretrained[name].Plus(sum.Times(0.3));
            }
        }

        Tensor images = data.Tasks[0].Images;
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(data.Config, expected, images), model.Forward(images)));
    }

    [TestMethod]
    public void RoutersRoundTripThroughSafetensorsWithTheirOptions()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var directory = new TempDirectory();
        string path = directory.File("routers.safetensors");
        var options = new WeightEnsemblingOptions { RouterInitStd = 0.3, Seed = 1 };
        using var trained = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options);
        trained.SaveRouters(path);

        Assert.AreEqual(options, WeightEnsemblingMoE.ReadOptions(path));
        using var fresh = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options with { Seed = 2 });
        Tensor images = data.Tasks[0].Images;
        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(trained.Forward(images), fresh.Forward(images)));
        fresh.LoadRouters(path);
        foreach (var (name, parameter) in trained.RouterParameters)
        {
            Assert.IsTrue(ModelTestData.Identical(parameter.detach(), fresh.RouterParameters[name].detach()), name);
        }

        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(trained.Forward(images), fresh.Forward(images)));

        using var otherLambda = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options with { Lambda = 0.5 });
        Assert.ThrowsExactly<InvalidDataException>(() => otherLambda.LoadRouters(path));
        using var shallower = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options with { RouterDepth = 1 });
        Assert.ThrowsExactly<InvalidDataException>(() => shallower.LoadRouters(path));
    }

    [TestMethod]
    public void MismatchedExpertsAndInvalidOptionsAreRejectedUpFront()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).Fc1);
        var broken = new Dictionary<string, Tensor>(data.Experts[1]) { [fc1] = zeros(3, 3) };
        var error = Assert.ThrowsExactly<MergeInputException>(() =>
            WeightEnsemblingMoE.Create(data.Config, data.Pretrained, [data.Experts[0], broken]));
        StringAssert.Contains(error.Message, fc1);

        var missing = new Dictionary<string, Tensor>(data.Experts[0]);
        missing.Remove(fc1);
        Assert.ThrowsExactly<MergeInputException>(() => WeightEnsemblingMoE.Create(data.Config, data.Pretrained, [missing]));
        Assert.ThrowsExactly<ArgumentException>(() =>
            WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, new WeightEnsemblingOptions { RouterDepth = 3 }));
        Assert.ThrowsExactly<ArgumentException>(() =>
            WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, WeightEnsemblingOptions.Efficient(keep: 0)));
    }
}
