using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Training;

/// <summary>Fine-tuning with a learning rate of its own for the tensors outside the MLPs (the local zoo recipe).</summary>
[TestClass]
public sealed class ParameterGroupTests
{
    [TestMethod]
    public void EachGroupMovesAtItsScaleOfTheLearningRate()
    {
        // AdamW's first step moves every entry by lr·g/(|g|+ε) ≈ lr: the scaled group must move by half as much.
        var full = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        var half = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        using var images = tensor(new float[] { 0.5f, -1f, 2f, 3f }).reshape(2, 2);
        using var labels = tensor(new long[] { 0, 0 });
        Tensor Logits(Tensor x) => stack([x.matmul(full[..2]).Plus(full[2]), x.matmul(half[..2]).Plus(half[2])], 1);
        // Two steps: the cosine schedule gives the first the full rate and the last zero.
        var options = new TrainingOptions { Epochs = 2, BatchSize = 2, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 };
        ClassifierTrainer.Train(Logits, [new ParameterGroup([full]), new ParameterGroup([half], 0.5)], images, labels, options);
        using var start = tensor(new float[] { 1f, -2f, 3f });
        using var movedFull = (full.detach() - start).abs();
        using var movedHalf = (half.detach() - start).abs();
        Assert.IsTrue(movedFull.gt(0).all().item<bool>(), "every entry of the unscaled group moved");
        Assert.IsLessThan(1e-6, (movedHalf.Times(2) - movedFull).abs().max().item<float>(), "the scaled group moved half as far");
        Assert.ThrowsExactly<ArgumentException>(() => ClassifierTrainer.Train(Logits, [new ParameterGroup([full], 0)], images, labels, options));
    }

    [TestMethod]
    public void NonMlpScaleZeroFreezesEverythingOutsideTheMlps()
    {
        var config = ModelTestData.TinyGray(layers: 2);
        var weights = ModelTestData.RandomWeights(config, seed: 4);
        using var model = VisionTransformer.FromState(config, weights);
        var frozen = ExpertTrainer.ParameterGroups(model, 0);
        Assert.HasCount(1, frozen);
        var trained = frozen[0].Parameters.ToHashSet();
        foreach (var (name, parameter) in model.NamedParameters)
        {
            bool mlp = name.Contains(".mlp.", StringComparison.Ordinal);
            Assert.AreEqual(mlp, trained.Contains(parameter), name);
            Assert.AreEqual(mlp, parameter.requires_grad, name);
        }

        using var other = VisionTransformer.FromState(config, weights);
        var scaled = ExpertTrainer.ParameterGroups(other, 0.1);
        Assert.HasCount(2, scaled);
        Assert.AreEqual(0.1, scaled[1].LearningRateScale);
        Assert.AreEqual(other.Parameters.Count(), scaled.Sum(g => g.Parameters.Count));
        Assert.HasCount(1, ExpertTrainer.ParameterGroups(other, null));
        foreach (var t in weights.Values) t.Dispose();
    }
}
