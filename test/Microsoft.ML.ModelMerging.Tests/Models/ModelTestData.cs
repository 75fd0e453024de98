using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

/// <summary>Small configs, seeded inputs and comparison helpers shared by the model tests.</summary>
internal static class ModelTestData
{
    /// <summary>28×28 grayscale, patch 7 (16 patches), the shape of our zoo models but narrower.</summary>
    public static VisionTransformerConfig TinyGray(int layers = 2, VisionActivation activation = VisionActivation.QuickGelu, int? projectionDim = null) => new()
    {
        ImageSize = 28,
        Channels = 1,
        PatchSize = 7,
        Width = 32,
        Layers = layers,
        Heads = 4,
        MlpSize = 64,
        Activation = activation,
        ProjectionDim = projectionDim,
    };

    /// <summary>RGB with CLIP normalisation, gelu and a projection.</summary>
    public static VisionTransformerConfig TinyRgb(int layers = 2) => new()
    {
        ImageSize = 16,
        Channels = 3,
        PatchSize = 4,
        Width = 24,
        Layers = layers,
        Heads = 3,
        MlpSize = 48,
        Activation = VisionActivation.Gelu,
        ProjectionDim = 10,
        Mean = VisionTransformerConfig.ClipMean,
        Std = VisionTransformerConfig.ClipStd,
    };

    public static Tensor Images(VisionTransformerConfig config, int batch, long seed) =>
        rand([batch, config.Channels, config.ImageSize, config.ImageSize], generator: new Generator((ulong)seed));

    /// <summary>
    /// Random float32 weights of every tensor, larger than the initialisation so every term of the forward matters:
    /// matrices ~ N(0, 0.3²), biases ~ N(0, 0.1²), LayerNorm weights ~ 1 + N(0, 0.1²).
    /// </summary>
    public static Dictionary<string, Tensor> RandomWeights(VisionTransformerConfig config, long seed)
    {
        var generator = new Generator((ulong)seed);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, shape) in VisionTransformerNames.Shapes(config))
        {
            Tensor noise = randn(shape, generator: generator);
            bool norm = name.Contains("norm", StringComparison.Ordinal) || name.Contains("layrnorm", StringComparison.Ordinal);
            bool bias = name.EndsWith(".bias", StringComparison.Ordinal);
            weights[name] = norm && !bias ? noise.Times(0.1).PlusScalar(1) : noise.Times(bias ? 0.1 : 0.3);
        }

        return weights;
    }

    /// <summary>Same shape and bit-for-bit equal values.</summary>
    public static bool Identical(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static double MaxAbsDiff(Tensor a, Tensor b) =>
        (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();

    /// <summary>A per-channel scale 1 + k/16 along the last dimension (like a non-local merging correction).</summary>
    public static Tensor ChannelScale(Tensor activation) =>
        arange(activation.shape[^1], dtype: activation.dtype, device: activation.device).DividedBy(16).PlusScalar(1);
}
