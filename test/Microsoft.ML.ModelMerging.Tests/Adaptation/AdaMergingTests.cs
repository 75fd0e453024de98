using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

[TestClass]
public sealed class AdaMergingTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    [DataRow(AdaMergingGranularity.TaskWise)]
    [DataRow(AdaMergingGranularity.LayerWise)]
    public void AtInitialisationItIsTaskArithmeticWithLambdaPointThree(AdaMergingGranularity granularity)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        using var model = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList, new AdaMergingOptions { Granularity = granularity });
        var expected = data.TaskArithmetic(0.3);

        var merged = model.MergedWeights();

        CollectionAssert.AreEquivalent(expected.Keys.ToArray(), merged.Keys.ToArray());
        foreach (var (name, tensor) in expected)
        {
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(tensor, merged[name]), name);
            Assert.IsFalse(merged[name].requires_grad, name);
        }

        Tensor images = data.Tasks[2].Images;
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(data.Config, expected, images), model.Forward(images)));
    }

    [TestMethod]
    public void LayerWiseHasOneCoefficientPerTaskPerTensor()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList);
        var names = VisionTransformerNames.Shapes(data.Config).Select(s => s.Name).ToArray();

        Assert.AreEqual(AdaMergingGranularity.LayerWise, model.Options.Granularity);
        CollectionAssert.AreEqual(names, model.MergedTensorNames.ToArray());
        CollectionAssert.AreEqual(new long[] { 2, names.Length }, model.Lambdas.shape);

        // Give every coefficient its own value and check each tensor uses its own column.
        double Coefficient(int expert, int tensor) => 0.1 + 0.2 * expert + 0.01 * tensor;
        using (no_grad())
        {
            for (int k = 0; k < names.Length; k++)
            {
                model.Lambdas[0, k] = Coefficient(0, k);
                model.Lambdas[1, k] = Coefficient(1, k);
            }
        }

        var merged = model.MergedWeights();
        for (int k = 0; k < names.Length; k++)
        {
            Tensor expected = data.Combine(names[k], [Coefficient(0, k), Coefficient(1, k)]);
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(expected, merged[names[k]]), names[k]);
            Assert.AreEqual(Coefficient(1, k), model.CoefficientsOf(names[k])[1].item<float>(), 1e-6);
        }
    }

    [TestMethod]
    public void TaskWiseSharesOneCoefficientPerTaskAcrossTensors()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList,
            new AdaMergingOptions { Granularity = AdaMergingGranularity.TaskWise, InitialLambda = 0.5 });
        CollectionAssert.AreEqual(new long[] { 2 }, model.Lambdas.shape);
        Assert.IsTrue(ModelTestData.Identical(full(2, 0.5f), model.Lambdas.detach()));

        using (no_grad())
        {
            model.Lambdas.copy_(tensor(new[] { 0.2f, 0.7f }));
        }

        foreach (var (name, tensor) in model.MergedWeights())
        {
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(data.Combine(name, [0.2, 0.7]), tensor), name);
        }
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void CoefficientsAreClampedToZeroOneAsInThePapersCodeUnlessTurnedOff(bool clamp)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList,
            new AdaMergingOptions { Granularity = AdaMergingGranularity.TaskWise, ClampCoefficients = clamp });
        StringAssert.Contains(model.Metadata[AdaMergingOptions.MetadataKey], $"\"clamp_coefficients\":{(clamp ? "true" : "false")}");
        using (no_grad())
        {
            model.Lambdas.copy_(tensor(new[] { -0.4f, 1.6f }));
        }

        double[] used = clamp ? [0, 1] : [-0.4, 1.6];
        foreach (var (name, merged) in model.MergedWeights())
        {
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(data.Combine(name, used), merged), name);
        }

        Assert.AreEqual(used[1], model.CoefficientsOf(model.MergedTensorNames[0])[1].item<float>(), 1e-6);

        // Past a bound the clamped coefficient gets no gradient, so test-time adaptation cannot push it further out.
        Tensor images = data.Tasks[0].Images;
        using var loss = model.Forward(images).pow(2).sum();
        loss.backward();
        var gradient = model.Lambdas.grad!.data<float>().ToArray();
        Assert.AreEqual(clamp, gradient.All(g => g == 0), string.Join(", ", gradient));
    }

    [TestMethod]
    [DataRow(AdaMergingGranularity.TaskWise)]
    [DataRow(AdaMergingGranularity.LayerWise)]
    public void AdaptationLowersEntropyChangingOnlyTheCoefficients(AdaMergingGranularity granularity)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var directory = new TempDirectory();
        using var model = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList, new AdaMergingOptions { Granularity = granularity });
        var inputs = AdaptationTestData.Snapshot(data.Pretrained);
        var heads = data.Tasks.Select(t => AdaptationTestData.Snapshot(t.Head.ToTensors())).ToList();
        double before = data.TotalEntropy(model.Forward);
        var options = TestTimeAdaptationOptions.ForAdaMerging() with
        {
            LearningRate = 1e-2,
            Steps = 15,
            BatchSizePerTask = 8,
            CheckpointPath = directory.File("adamerging.safetensors"),
        };

        TestTimeAdaptation.Run(model, data.Tasks, options);

        double after = data.TotalEntropy(model.Forward);
        Assert.IsLessThan(before - 0.01, after, $"entropy went from {before:F4} to {after:F4}");
        Assert.IsGreaterThan(0.01, (model.Lambdas.detach().MinusScalar(0.3)).abs().max().item<float>());
        foreach (var (name, tensor) in inputs)
        {
            Assert.IsTrue(ModelTestData.Identical(tensor, data.Pretrained[name]), name);
        }

        for (int t = 0; t < heads.Count; t++)
        {
            foreach (var (name, tensor) in heads[t])
            {
                Assert.IsTrue(ModelTestData.Identical(tensor, data.Tasks[t].Head.ToTensors()[name]), name);
            }
        }

        // The merged model is task arithmetic with the learned coefficients, and the checkpoint restores them.
        var merged = model.MergedWeights();
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(data.Config, merged, data.Tasks[0].Images), model.Forward(data.Tasks[0].Images)));
        using var restored = AdaMerging.Create(data.Config, data.Pretrained, data.ExpertList, new AdaMergingOptions { Granularity = granularity });
        Assert.AreEqual(15, AdaptationCheckpoint.LoadParameters(options.CheckpointPath, restored));
        Assert.IsTrue(ModelTestData.Identical(model.Lambdas.detach(), restored.Lambdas.detach()));
    }
}
