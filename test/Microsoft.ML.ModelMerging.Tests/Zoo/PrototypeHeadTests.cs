using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

/// <summary>The CLIP-style expert head made of class prototypes, with its logit scale calibrated on held-out images.</summary>
[TestClass]
public sealed class PrototypeHeadTests
{
    [TestMethod]
    public void ClassEmbeddingsAreMeanNormalisedFeaturesAndTheScaleIsTheBestCalibratedOnTheGrid()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(layers: 2);
        var weights = ModelTestData.RandomWeights(config, seed: 3);
        string[] classes = ["a", "b", "c"];
        ImageDataset Data(int perClass, long seed)
        {
            using var images = ModelTestData.Images(config, classes.Length * perClass, seed);
            int[] labels = [.. Enumerable.Range(0, classes.Length * perClass).Select(i => i % classes.Length)];
            return new ImageDataset("toy", images.contiguous().data<float>().ToArray(), labels, classes, config.Channels, config.ImageSize, config.ImageSize);
        }

        var shots = Data(4, seed: 1);
        var calibration = Data(10, seed: 2);
        using var head = ExpertTrainer.PrototypeHead(config, weights, shots, calibration);

        Assert.AreEqual(ClassificationHeadKind.Clip, head.Kind);
        Assert.IsFalse(head.Weight.requires_grad, "the head is frozen");
        // Independently: each class's embedding points along the mean of its shots' normalised features.
        using var features = nn.functional.normalize(VisionTransformer.Forward(config, weights, shots.ToTensor()), dim: 1);
        for (int c = 0; c < classes.Length; c++)
        {
            using var mean = features.index_select(0, tensor(Enumerable.Range(0, shots.Count).Where(i => i % classes.Length == c).Select(i => (long)i).ToArray())).mean([0]);
            double cosine = nn.functional.cosine_similarity(mean.unsqueeze(0), head.Weight[c].unsqueeze(0)).item<float>();
            Assert.IsGreaterThan(1 - 1e-5, cosine, $"class {c}");
        }

        // The scale is a point of the log grid 10^(k/20) whose cross-entropy on the calibration images is the least.
        double scale = head.LogitScale!.item<float>();
        double k = Math.Round(20 * Math.Log10(scale));
        Assert.AreEqual(Math.Pow(10, k / 20), scale, 1e-3 * scale);
        using var cosines = nn.functional.normalize(VisionTransformer.Forward(config, weights, calibration.ToTensor()), dim: 1)
            .matmul(nn.functional.normalize(head.Weight, dim: 1).t());
        using var labels = calibration.LabelsToTensor();
        double Loss(double s) => nn.functional.cross_entropy(cosines.Times(s), labels).item<float>();
        foreach (double neighbour in new[] { Math.Pow(10, (k - 1) / 20), Math.Pow(10, (k + 1) / 20) })
            if (neighbour is >= 1 and <= 1000) Assert.IsLessThanOrEqualTo(Loss(neighbour) + 1e-6, Loss(scale), $"scale {scale} against {neighbour}");
        foreach (var t in weights.Values) t.Dispose();
    }

    [TestMethod]
    public void TheHeadKindIsPartOfTheRecipeOnlyWhenItIsNotTheLinearProbe()
    {
        var prototype = new ZooRecipe();
        var linear = prototype with { Head = ExpertHeadKind.LinearProbe };
        Assert.AreEqual(ExpertHeadKind.Prototype, prototype.Head, "the default recipe (v4) has prototype heads");
        Assert.AreEqual(ExpertHeadKind.LinearProbe, ZooRecipe.NonLocal.Head);
        Assert.AreEqual(ExpertHeadKind.LinearProbe, ZooRecipe.Far.Head);
        StringAssert.DoesNotMatch(linear.ToJson(), new System.Text.RegularExpressions.Regex("\"head\""));
        StringAssert.Contains(prototype.ToJson(), "\"head\":\"prototype\"");
        Assert.AreNotEqual(linear.Hash, prototype.Hash, "experts behind other heads are other experts");
        Assert.AreEqual(linear.PretrainingHash, prototype.PretrainingHash, "the pre-trained backbone does not depend on the heads");
    }
}
