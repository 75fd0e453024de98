using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

/// <summary>
/// An independent float64 implementation of the CLIP vision forward with explicit matmul/softmax/statistics
/// (no conv2d, layer_norm, gelu, linear or attention kernels), to check the library's functional forward against.
/// </summary>
internal static class ReferenceVisionTransformer
{
    public static Tensor Forward(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images)
    {
        Tensor W(string name) => weights[name].to(ScalarType.Float64);
        long b = images.shape[0], c = config.Channels, p = config.PatchSize, g = config.GridSize, d = config.Width;

        var mean = new double[c];
        var std = new double[c];
        for (int i = 0; i < c; i++)
        {
            mean[i] = config.Mean.Count == 1 ? config.Mean[0] : config.Mean[i];
            std[i] = config.Std.Count == 1 ? config.Std[0] : config.Std[i];
        }

        Tensor x = (images.to(ScalarType.Float64) - tensor(mean).view(1, c, 1, 1)) / tensor(std).view(1, c, 1, 1);

        // Cut the image into patches by reshaping, then embed each patch with one matrix product.
        Tensor patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p);
        Tensor embedded = patches.matmul(W(VisionTransformerNames.PatchEmbedding).reshape(d, c * p * p).t());
        Tensor cls = W(VisionTransformerNames.ClassEmbedding).reshape(1, 1, d).repeat(b, 1, 1);
        Tensor h = cat([cls, embedded], 1).Plus(W(VisionTransformerNames.PositionEmbedding));

        h = LayerNorm(h, W, VisionTransformerNames.PreLayerNorm, config.LayerNormEps);
        for (int layer = 0; layer < config.Layers; layer++)
        {
            var names = VisionTransformerNames.Layer(layer);
            h = h.Plus(Attention(config, LayerNorm(h, W, names.LayerNorm1, config.LayerNormEps), W, names));
            Tensor hidden = Affine(LayerNorm(h, W, names.LayerNorm2, config.LayerNormEps), W, names.Fc1);
            h = h.Plus(Affine(Activation(config.Activation, hidden), W, names.Fc2));
        }

        Tensor features = LayerNorm(h[.., 0, ..], W, VisionTransformerNames.PostLayerNorm, config.LayerNormEps);
        return config.ProjectionDim is null ? features : features.matmul(W(VisionTransformerNames.VisualProjection).t());
    }

    public static Tensor Activation(VisionActivation activation, Tensor x) => activation switch
    {
        VisionActivation.QuickGelu => x / (exp(x.Times(-1.702)).PlusScalar(1)),
        VisionActivation.Gelu => x.Times(0.5) * (special.erf(x.DividedBy(Math.Sqrt(2))).PlusScalar(1)),
        _ => throw new ArgumentOutOfRangeException(nameof(activation)),
    };

    public static Tensor Affine(Tensor x, Func<string, Tensor> w, string prefix) =>
        x.matmul(w(prefix + ".weight").t()).Plus(w(prefix + ".bias"));

    private static Tensor LayerNorm(Tensor x, Func<string, Tensor> w, string prefix, double eps)
    {
        Tensor mu = x.mean([-1L], keepdim: true);
        Tensor variance = (x - mu).pow(2).mean([-1L], keepdim: true);
        return ((x - mu) / sqrt(variance.PlusScalar(eps)) * w(prefix + ".weight")).Plus(w(prefix + ".bias"));
    }

    private static Tensor Attention(VisionTransformerConfig config, Tensor x, Func<string, Tensor> w, EncoderLayerNames names)
    {
        long b = x.shape[0], t = x.shape[1], heads = config.Heads, size = config.HeadSize;
        Tensor Heads(Tensor y) => y.reshape(b, t, heads, size).permute(0, 2, 1, 3);
        Tensor q = Heads(Affine(x, w, names.QProj)), k = Heads(Affine(x, w, names.KProj)), v = Heads(Affine(x, w, names.VProj));
        Tensor scores = q.matmul(k.transpose(-1, -2)).DividedBy(Math.Sqrt(size));
        Tensor e = exp(scores - scores.amax([-1L], keepdim: true));
        Tensor probabilities = e / e.sum([-1L], keepdim: true);
        Tensor context = probabilities.matmul(v).permute(0, 2, 1, 3).reshape(b, t, config.Width);
        return Affine(context, w, names.OutProj);
    }
}
