using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Training;

/// <summary>
/// A training of one step (one epoch over no more images than a batch, e.g. <c>finetune --epochs 1</c> on a small folder)
/// trains: the cosine schedule reaches zero at the last step, which must not be the only one.
/// </summary>
[TestClass]
public sealed class SingleStepTrainingTests
{
    [TestMethod]
    public void TheOnlyStepIsTakenAtTheFullRate()
    {
        Assert.AreEqual(1e-2, new TrainingOptions { LearningRate = 1e-2 }.LearningRateAt(0, 1), 1e-15);

        // AdamW's first step moves every entry by lr·g/(|g|+ε) ≈ lr.
        var weights = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        using var images = tensor(new float[] { 0.5f, -1f, 2f, 3f }).reshape(2, 2);
        using var labels = tensor(new long[] { 0, 0 });
        Tensor Logits(Tensor x) => stack([x.matmul(weights[..2]).Plus(weights[2]), zeros(x.shape[0])], 1);
        var options = new TrainingOptions { Epochs = 1, BatchSize = 2, LearningRate = 1e-2, WeightDecay = 0 };
        ClassifierTrainer.Train(Logits, [new ParameterGroup([weights])], images, labels, options);
        using var start = tensor(new float[] { 1f, -2f, 3f });
        using var moved = (weights.detach() - start).abs();
        Assert.IsLessThan(1e-4, (moved - 1e-2f).abs().max().item<float>(), $"every entry moved by the learning rate: {string.Join(", ", moved.data<float>().ToArray())}");
    }
}
