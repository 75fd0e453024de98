using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.DataMerging;

[TestClass]
public sealed class RegMeanMergeTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void GramMatricesAreThoseOfEveryBlockLinearsInputs()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 1, imagesPerTask: 7);
        Tensor images = data.Tasks[0].Images;

        // Batches of 3 (3 + 3 + 1): the running sums must weigh every row alike.
        var grams = RegMeanMerge.GramMatrices(data.Config, data.Experts[0], images, batchSize: 3);

        var expected = DataMergingReference.Grams(data.Config, data.Experts[0], images);
        CollectionAssert.AreEquivalent(RegMeanMerge.LinearLayers(data.Config).ToArray(), grams.Keys.ToArray());
        CollectionAssert.AreEquivalent(expected.Keys.ToArray(), grams.Keys.ToArray());
        foreach (var (prefix, gram) in expected)
        {
            Assert.AreEqual(ScalarType.Float64, grams[prefix].dtype);
            Assert.IsLessThan(1e-5, DataMergingReference.RelativeError(grams[prefix], gram), prefix);
        }
    }

    /// <summary>
    /// The merged weight of a linear layer solves the regularised normal equations Σ_i G̃_i·(Wᵀ − W_iᵀ) = 0 (the
    /// optimality condition of Σ_i ‖X_i·Wᵀ − X_i·W_iᵀ‖² with off-diagonals scaled by α); every other tensor is the mean.
    /// </summary>
    [TestMethod]
    [DataRow(0.95)]
    [DataRow(1.0)]
    public void LinearWeightsSolveTheNormalEquationsAndTheRestIsAveraged(double alpha)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        var generator = new Generator(5);
        var linears = RegMeanMerge.LinearLayers(data.Config);
        var grams = data.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)linears.ToDictionary(p => p, p =>
        {
            long inputs = e[VisionTransformerNames.Weight(p)].shape[1];
            Tensor x = randn([3 * inputs, inputs], ScalarType.Float64, generator: generator) * (rand([inputs], ScalarType.Float64, generator: generator).Times(3));
            return x.t().matmul(x).DividedBy(x.shape[0]);
        }, StringComparer.Ordinal)).ToList();

        var merged = RegMeanMerge.Merge(data.Config, data.ExpertList, grams, alpha);

        var linearWeights = linears.Select(VisionTransformerNames.Weight).ToHashSet();
        foreach (var (name, _) in VisionTransformerNames.Shapes(data.Config))
        {
            Tensor w = merged[name].to(ScalarType.Float64);
            if (!linearWeights.Contains(name))
            {
                Tensor mean = data.Experts.Select(e => e[name].to(ScalarType.Float64)).Aggregate((a, b) => a.Plus(b)).DividedBy(3);
                Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(w, mean), name);
                continue;
            }

            string prefix = name[..^".weight".Length];
            Tensor residual = zeros_like(w.t());
            Tensor scale = zeros(1, ScalarType.Float64);
            for (int i = 0; i < 3; i++)
            {
                Tensor g = grams[i][prefix];
                Tensor reduced = g.Times(alpha).Plus(diag(g.diagonal()).Times(1 - alpha));
                Tensor wi = data.Experts[i][name].to(ScalarType.Float64);
                residual += reduced.matmul(w.t() - wi.t());
                scale = scale.maximum(reduced.matmul(wi.t()).abs().max());
            }

            Assert.IsLessThan(1e-5, (residual.abs().max() / scale).item<double>(), name);
        }
    }

    /// <summary>With α = 0 only the diagonals remain: each input column is the average of the experts' columns weighted by that input's second moment.</summary>
    [TestMethod]
    public void DiagonalOnlyGramsGiveAColumnWiseWeightedAverage()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        var generator = new Generator(8);
        var linears = RegMeanMerge.LinearLayers(data.Config);
        var grams = data.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)linears.ToDictionary(p => p, p =>
        {
            long inputs = e[VisionTransformerNames.Weight(p)].shape[1];
            Tensor x = randn([inputs, inputs], ScalarType.Float64, generator: generator);
            return x.t().matmul(x).Plus(eye(inputs, dtype: ScalarType.Float64));
        }, StringComparer.Ordinal)).ToList();

        var merged = RegMeanMerge.Merge(data.Config, data.ExpertList, grams, alpha: 0);

        foreach (string prefix in linears)
        {
            string name = VisionTransformerNames.Weight(prefix);
            double[] d0 = grams[0][prefix].diagonal().data<double>().ToArray(), d1 = grams[1][prefix].diagonal().data<double>().ToArray();
            double[] w0 = data.Experts[0][name].to(ScalarType.Float64).flatten().data<double>().ToArray();
            double[] w1 = data.Experts[1][name].to(ScalarType.Float64).flatten().data<double>().ToArray();
            float[] actual = merged[name].flatten().data<float>().ToArray();
            int columns = d0.Length;
            for (int j = 0; j < actual.Length; j++)
            {
                int column = j % columns;
                double expected = (d0[column] * w0[j] + d1[column] * w1[j]) / (d0[column] + d1[column]);
                Assert.AreEqual(expected, actual[j], 1e-5, $"{name}[{j}]");
            }
        }
    }

    [TestMethod]
    public void MergingExamplesUsesEachExpertsInputsOnItsOwnTask()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2, imagesPerTask: 6);
        var tasks = data.Tasks.Select((t, i) => new ExpertExamples(t.Name, data.Experts[i], t.Images)).ToList();

        var merged = RegMeanMerge.Merge(data.Config, tasks, new RegMeanMergeOptions { BatchSize = 4 });

        var grams = tasks.Select((t, i) => (IReadOnlyDictionary<string, Tensor>)DataMergingReference.Grams(data.Config, data.Experts[i], t.Images)).ToList();
        var expected = RegMeanMerge.Merge(data.Config, data.ExpertList, grams, RegMeanMergeOptions.DefaultAlpha);
        foreach (var (name, tensor) in expected)
        {
            Assert.IsLessThan(1e-4, DataMergingReference.RelativeError(merged[name], tensor), name);
        }

        // And it is not the plain average: the inputs matter.
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).Fc1);
        Tensor average = (data.Experts[0][fc1].Plus(data.Experts[1][fc1])).DividedBy(2);
        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(merged[fc1], average));
    }

    [TestMethod]
    public void OneExpertMergesToItself()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 1, imagesPerTask: 4);

        var merged = RegMeanMerge.Merge(data.Config, [new ExpertExamples("t", data.Experts[0], data.Tasks[0].Images)]);

        foreach (var (name, tensor) in merged)
        {
            Assert.IsLessThan(1e-4, DataMergingReference.RelativeError(tensor, data.Experts[0][name]), name);
        }

        Assert.ThrowsExactly<ArgumentException>(() => new RegMeanMergeOptions { Alpha = 1.5 }.Validate());
    }
}
