using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class ClassificationHeadTests
{
    private static readonly string[] Classes = ["cat", "dog", "ship"];

    private static readonly double[,] Features = { { 1.0, -2.0, 0.5, 3.0 }, { 0.0, 1.0, -1.0, 2.0 } };

    private static readonly double[,] Weight = { { 0.5, 0.1, -0.3, 0.2 }, { -1.0, 0.0, 2.0, 0.5 }, { 0.3, 0.3, 0.3, -0.7 } };

    private static readonly double[] Bias = [0.1, -0.2, 0.05];

    [TestMethod]
    public void LinearHeadComputesFeaturesTimesWeightPlusBias()
    {
        using var scope = NewDisposeScope();
        using var head = ClassificationHead.Linear(Classes, Matrix(Weight), tensor(Bias).to(ScalarType.Float32));

        var logits = head.Forward(Matrix(Features)).to(ScalarType.Float64).data<double>().ToArray();

        for (int b = 0; b < 2; b++)
        {
            for (int c = 0; c < 3; c++)
            {
                double expected = Bias[c];
                for (int f = 0; f < 4; f++)
                {
                    expected += Features[b, f] * Weight[c, f];
                }

                Assert.AreEqual(expected, logits[(b * 3) + c], 1e-5, $"logit [{b},{c}]");
            }
        }
    }

    [TestMethod]
    public void ClipHeadComputesScaledCosineSimilarities()
    {
        using var scope = NewDisposeScope();
        using var head = ClassificationHead.Clip(Classes, Matrix(Weight), logitScale: 50);

        var logits = head.Forward(Matrix(Features)).to(ScalarType.Float64).data<double>().ToArray();

        for (int b = 0; b < 2; b++)
        {
            for (int c = 0; c < 3; c++)
            {
                double dot = 0, featureNorm = 0, classNorm = 0;
                for (int f = 0; f < 4; f++)
                {
                    dot += Features[b, f] * Weight[c, f];
                    featureNorm += Features[b, f] * Features[b, f];
                    classNorm += Weight[c, f] * Weight[c, f];
                }

                Assert.AreEqual(50 * dot / Math.Sqrt(featureNorm * classNorm), logits[(b * 3) + c], 1e-4, $"logit [{b},{c}]");
            }
        }
    }

    [TestMethod]
    [DataRow(ClassificationHeadKind.Linear)]
    [DataRow(ClassificationHeadKind.Clip)]
    public void TensorsAndMetadataRoundTrip(ClassificationHeadKind kind)
    {
        using var scope = NewDisposeScope();
        using var head = kind == ClassificationHeadKind.Linear
            ? ClassificationHead.CreateLinear(Classes, featureDim: 4, seed: 1)
            : ClassificationHead.Clip(Classes, Matrix(Weight), logitScale: 42);

        var tensors = head.ToTensors();
        var metadata = head.ToMetadata();
        tensors["vision_model.post_layernorm.weight"] = ones(4);  // a backbone tensor in the same file is ignored
        using var back = ClassificationHead.FromTensors(tensors, metadata);

        Assert.AreEqual(kind, back.Kind);
        CollectionAssert.AreEqual(Classes, back.ClassNames.ToArray());
        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(head.Forward(Matrix(Features)), back.Forward(Matrix(Features))));
        string[] expectedNames = kind == ClassificationHeadKind.Linear
            ? [ClassificationHead.WeightName, ClassificationHead.BiasName]
            : [ClassificationHead.WeightName, ClassificationHead.LogitScaleName];
        CollectionAssert.AreEquivalent(expectedNames, head.ToTensors().Keys.ToArray());
        Assert.AreEqual(kind == ClassificationHeadKind.Linear ? "linear" : "clip", metadata[ClassificationHead.KindMetadataKey]);
        Assert.AreEqual("[\"cat\",\"dog\",\"ship\"]", metadata[ClassificationHead.ClassNamesMetadataKey]);
    }

    [TestMethod]
    public void CreateLinearIsSeededAndBoundedLikeTorchLinear()
    {
        using var scope = NewDisposeScope();
        using var a = ClassificationHead.CreateLinear(Classes, featureDim: 16, seed: 5);
        using var b = ClassificationHead.CreateLinear(Classes, featureDim: 16, seed: 5);

        Assert.IsTrue(ModelTestData.Identical(a.Weight, b.Weight));
        Assert.IsLessThanOrEqualTo(0.25, a.Weight.abs().max().item<float>());
        Assert.IsLessThanOrEqualTo(0.25, a.Bias!.abs().max().item<float>());
        Assert.AreEqual(2, a.Parameters.Count(), "weight and bias");
    }

    [TestMethod]
    public void BadTensorsOrMetadataAreNamed()
    {
        using var scope = NewDisposeScope();
        var linear = new Dictionary<string, string>
        {
            [ClassificationHead.KindMetadataKey] = "linear",
            [ClassificationHead.ClassNamesMetadataKey] = "[\"a\",\"b\"]",
        };

        var rows = Assert.ThrowsExactly<ArgumentException>(() => ClassificationHead.FromTensors(
            new Dictionary<string, Tensor> { [ClassificationHead.WeightName] = zeros(3, 4), [ClassificationHead.BiasName] = zeros(3) }, linear));
        var bias = Assert.ThrowsExactly<InvalidDataException>(() => ClassificationHead.FromTensors(
            new Dictionary<string, Tensor> { [ClassificationHead.WeightName] = zeros(2, 4) }, linear));
        var kind = Assert.ThrowsExactly<InvalidDataException>(() => ClassificationHead.FromTensors(
            new Dictionary<string, Tensor>(), new Dictionary<string, string> { [ClassificationHead.KindMetadataKey] = "mlp" }));
        var features = Assert.ThrowsExactly<ArgumentException>(() =>
        {
            using var head = ClassificationHead.CreateLinear(Classes, featureDim: 4, seed: 1);
            head.Forward(zeros(2, 5));
        });

        StringAssert.Contains(rows.Message, "'head.weight' has shape [3, 4]; expected [2, F]");
        StringAssert.Contains(bias.Message, "'head.bias'");
        StringAssert.Contains(kind.Message, "'mlp'");
        StringAssert.Contains(features.Message, "[B, 4]");
    }

    private static Tensor Matrix(double[,] values) =>
        tensor(values.Cast<double>().ToArray()).reshape(values.GetLength(0), values.GetLength(1)).to(ScalarType.Float32);
}
