using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.DataMerging;

[TestClass]
public sealed class FisherMergeTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    /// <summary>Per-example squared gradients of the labels' log-likelihood, as an independent float64 computation gets them.</summary>
    [TestMethod]
    public void DiagonalFisherIsTheMeanSquaredGradientOfEachExamplesLogLikelihood()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 1, imagesPerTask: 5);
        var head = data.Tasks[0].Head;
        long[] labels = [0, 3, 1, 4, 3];
        Tensor images = data.Tasks[0].Images;
        bool[] headRequiresGrad = [.. head.Parameters.Select(p => p.requires_grad)];

        var fisher = FisherMerge.DiagonalFisher(data.Config, data.Experts[0], head, images, tensor(labels));

        var expected = DataMergingReference.Fisher(data.Config, data.Experts[0], head.Weight, head.Bias!, images, labels);
        CollectionAssert.AreEquivalent(expected.Keys.ToArray(), fisher.Keys.ToArray());
        foreach (var (name, value) in expected)
        {
            Assert.AreEqual(ScalarType.Float32, fisher[name].dtype, name);
            // k_proj.bias gets no gradient in exact arithmetic (softmax ignores a shift shared by all keys): compare absolutely there.
            double scale = value.abs().max().item<double>();
            Assert.IsLessThanOrEqualTo(1e-3 * scale + 1e-8, ModelTestData.MaxAbsDiff(fisher[name], value), name);
        }

        Assert.IsTrue(head.Parameters.All(p => p.grad is null), "the head must get no gradient");
        CollectionAssert.AreEqual(headRequiresGrad, head.Parameters.Select(p => p.requires_grad).ToArray());
        Assert.IsTrue(data.Experts[0].Values.All(t => !t.requires_grad), "the expert's tensors are not changed");
    }

    /// <summary>θ = Σ (F_i + ε)·θ_i / Σ (F_i + ε), entry by entry, recomputed here in doubles.</summary>
    [TestMethod]
    public void MergeIsTheFisherWeightedAverageOfEveryEntry()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        var generator = new Generator(21);
        // Fishers spanning many magnitudes, with exact zeros where ε decides.
        var fishers = data.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.ToDictionary(kv => kv.Key,
            kv => (randn(kv.Value.shape, generator: generator).Times(4)).exp().Times(1e-5) * (rand(kv.Value.shape, generator: generator) > 0.2), StringComparer.Ordinal)).ToList();
        const double epsilon = 1e-6;

        var merged = FisherMerge.Merge(data.Config, data.ExpertList, fishers, epsilon);

        Assert.HasCount(VisionTransformerNames.Shapes(data.Config).Count, merged);
        foreach (var (name, tensor) in merged)
        {
            var thetas = data.Experts.Select(e => e[name].to(ScalarType.Float64).flatten().data<double>().ToArray()).ToArray();
            var weights = fishers.Select(f => f[name].to(ScalarType.Float64).flatten().data<double>().ToArray()).ToArray();
            float[] actual = tensor.flatten().data<float>().ToArray();
            for (int j = 0; j < actual.Length; j++)
            {
                double numerator = 0, denominator = 0;
                for (int i = 0; i < thetas.Length; i++)
                {
                    numerator += (weights[i][j] + epsilon) * thetas[i][j];
                    denominator += weights[i][j] + epsilon;
                }

                Assert.AreEqual(numerator / denominator, actual[j], 1e-5 * (1 + Math.Abs(numerator / denominator)), $"{name}[{j}]");
            }
        }
    }

    [TestMethod]
    public void MergingExamplesUsesEachExpertsFisherOnItsOwnTask()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2, imagesPerTask: 3);
        long[][] labels = [[2, 0, 4], [1, 1, 3]];
        var tasks = data.Tasks.Select((t, i) => new ExpertExamples(t.Name, data.Experts[i], t.Images) { Head = t.Head, Labels = tensor(labels[i]) }).ToList();
        var reported = new List<DataMergeProgress>();

        var merged = FisherMerge.Merge(data.Config, tasks, progress: new ModelMerging.Runtime.SynchronousProgress<DataMergeProgress>(reported.Add));

        var fishers = tasks.Select((t, i) => (IReadOnlyDictionary<string, Tensor>)DataMergingReference.Fisher(
            data.Config, data.Experts[i], t.Head!.Weight, t.Head.Bias!, t.Images, labels[i])).ToList();
        foreach (var (name, _) in VisionTransformerNames.Shapes(data.Config))
        {
            Tensor w0 = fishers[0][name].PlusScalar(1e-6), w1 = fishers[1][name].PlusScalar(1e-6);
            Tensor expected = ((w0 * data.Experts[0][name].to(ScalarType.Float64)).Plus(w1 * data.Experts[1][name].to(ScalarType.Float64))) / (w0.Plus(w1));
            Assert.IsLessThan(1e-4, ModelTestData.MaxAbsDiff(merged[name], expected), name);
        }

        Assert.HasCount(6, reported);
        Assert.AreEqual(new DataMergeProgress("task1", 1, 2, 3, 3), reported[^1]);
    }

    [TestMethod]
    public void ExamplesWithoutLabelsOrHeadAreRejected()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 1, imagesPerTask: 2);
        var task = new ExpertExamples("t", data.Experts[0], data.Tasks[0].Images) { Head = data.Tasks[0].Head };

        var error = Assert.ThrowsExactly<ArgumentException>(() => FisherMerge.Merge(data.Config, [task]));
        StringAssert.Contains(error.Message, "needs a head and labels");
        Assert.ThrowsExactly<ArgumentException>(() => FisherMerge.Merge(data.Config, [task with { Labels = tensor(new long[] { 0 }) }]));
        Assert.ThrowsExactly<ArgumentException>(() => new FisherMergeOptions { Epsilon = 0 }.Validate());
    }
}
