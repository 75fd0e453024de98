using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

[TestClass]
public sealed class VisionTransformerTrainingTests
{
    [TestMethod]
    public void AdamStepsOnTheModelAndHeadReduceCrossEntropy()
    {
        var config = ModelTestData.TinyGray(layers: 2);
        using var model = VisionTransformer.Create(config, seed: 1);
        using var head = ClassificationHead.CreateLinear(["dark", "top", "left", "bright"], config.FeatureDim, seed: 2);
        var (images, labels) = LearnableBatch(config, count: 32, seed: 3);
        var optimizer = optim.Adam(model.Parameters.Concat(head.Parameters), lr: 3e-3);

        double Loss()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return nn.functional.cross_entropy(head.Forward(model.Forward(images)), labels).item<float>();
        }

        double before = Loss();
        for (int step = 0; step < 15; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            Tensor loss = nn.functional.cross_entropy(head.Forward(model.Forward(images)), labels);
            loss.backward();
            optimizer.step();
        }

        double after = Loss();
        Assert.IsLessThan(0.5 * before, after, $"cross-entropy went from {before:F4} to {after:F4}");
        foreach (var (name, parameter) in model.NamedParameters)
        {
            Assert.IsNotNull(parameter.grad, $"{name} received no gradient");
        }
    }

    /// <summary>Noise images whose class decides where a bright region is, so the task is learnable in a few steps.</summary>
    private static (Tensor Images, Tensor Labels) LearnableBatch(VisionTransformerConfig config, int count, long seed)
    {
        var generator = new Generator((ulong)seed);
        Tensor labels = arange(count, dtype: ScalarType.Int64) % 4;
        Tensor images = rand([count, 1, config.ImageSize, config.ImageSize], generator: generator).Times(0.3);
        int half = config.ImageSize / 2;
        for (int i = 0; i < count; i++)
        {
            switch (i % 4)
            {
                case 1: images[i, 0, ..half, ..] += 0.6; break;
                case 2: images[i, 0, .., ..half] += 0.6; break;
                case 3: images[i] += 0.6; break;
            }
        }

        images.DetachFromDisposeScope();
        labels.DetachFromDisposeScope();
        return (images, labels);
    }
}
