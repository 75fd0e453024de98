using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.DataMerging;

/// <summary>
/// Fisher information and RegMean Gram matrices computed independently of the library: float64 forwards written with
/// explicit matrix products (<see cref="ReferenceVisionTransformer"/>, and here a copy that records every block linear's
/// input), a hand-written head and log-likelihood, and autograd on float64 leaves.
/// </summary>
internal static class DataMergingReference
{
    /// <summary>Mean over examples of the squared gradient of log softmax(x·Wᵀ + b)[y] with respect to every backbone tensor, float64.</summary>
    public static Dictionary<string, Tensor> Fisher(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        Tensor headWeight, Tensor headBias, Tensor images, long[] labels)
    {
        var leaves = weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(ScalarType.Float64).clone().requires_grad_(true), StringComparer.Ordinal);
        var sums = weights.ToDictionary(kv => kv.Key, kv => zeros(kv.Value.shape, ScalarType.Float64), StringComparer.Ordinal);
        Tensor w = headWeight.detach().to(ScalarType.Float64), b = headBias.detach().to(ScalarType.Float64);
        for (int n = 0; n < labels.Length; n++)
        {
            Tensor features = ReferenceVisionTransformer.Forward(config, leaves, images.narrow(0, n, 1));
            Tensor logits = features.matmul(w.t()).Plus(b);                        // [1,C]
            Tensor max = logits.max().detach();
            Tensor logLikelihood = logits[0, labels[n]] - max - (logits - max).exp().sum().log();
            foreach (var leaf in leaves.Values)
            {
                leaf.grad?.zero_();
            }

            logLikelihood.backward();
            foreach (var (name, leaf) in leaves)
            {
                sums[name] += leaf.grad!.detach().Squared();
            }
        }

        return sums.ToDictionary(kv => kv.Key, kv => kv.Value.DividedBy(labels.Length), StringComparer.Ordinal);
    }

    /// <summary>XᵀX / rows of the inputs of every block linear (by prefix), float64, from a float64 forward of the images.</summary>
    public static Dictionary<string, Tensor> Grams(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images)
    {
        var grams = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor W(string name) => weights[name].to(ScalarType.Float64);
        Tensor Linear(string prefix, Tensor x)
        {
            Tensor rows = x.reshape(-1, x.shape[^1]);
            grams[prefix] = rows.t().matmul(rows).DividedBy(rows.shape[0]);
            return x.matmul(W(prefix + ".weight").t()).Plus(W(prefix + ".bias"));
        }

        Tensor LayerNorm(Tensor x, string prefix)
        {
            Tensor mu = x.mean([-1L], keepdim: true);
            Tensor variance = (x - mu).pow(2).mean([-1L], keepdim: true);
            return ((x - mu) / sqrt(variance.PlusScalar(config.LayerNormEps)) * W(prefix + ".weight")).Plus(W(prefix + ".bias"));
        }

        long b = images.shape[0], c = config.Channels, p = config.PatchSize, g = config.GridSize, d = config.Width;
        Tensor x = (images.to(ScalarType.Float64).MinusScalar(config.Mean[0])).DividedBy(config.Std[0]);
        Tensor patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p);
        Tensor h = cat([W(VisionTransformerNames.ClassEmbedding).reshape(1, 1, d).repeat(b, 1, 1),
            patches.matmul(W(VisionTransformerNames.PatchEmbedding).reshape(d, c * p * p).t())], 1).Plus(W(VisionTransformerNames.PositionEmbedding));
        h = LayerNorm(h, VisionTransformerNames.PreLayerNorm);
        long t = h.shape[1], heads = config.Heads, size = config.HeadSize;
        Tensor Heads(Tensor y) => y.reshape(b, t, heads, size).permute(0, 2, 1, 3);
        for (int layer = 0; layer < config.Layers; layer++)
        {
            var names = VisionTransformerNames.Layer(layer);
            Tensor a = LayerNorm(h, names.LayerNorm1);
            Tensor q = Heads(Linear(names.QProj, a)), k = Heads(Linear(names.KProj, a)), v = Heads(Linear(names.VProj, a));
            Tensor scores = q.matmul(k.transpose(-1, -2)).DividedBy(Math.Sqrt(size));
            Tensor e = exp(scores - scores.amax([-1L], keepdim: true));
            Tensor context = (e / e.sum([-1L], keepdim: true)).matmul(v).permute(0, 2, 1, 3).reshape(b, t, d);
            h = h.Plus(Linear(names.OutProj, context));
            Tensor hidden = Linear(names.Fc1, LayerNorm(h, names.LayerNorm2));
            h = h.Plus(Linear(names.Fc2, ReferenceVisionTransformer.Activation(config.Activation, hidden)));
        }

        return grams;
    }

    /// <summary>Relative error max|a − b| / max|b|.</summary>
    public static double RelativeError(Tensor actual, Tensor expected)
    {
        double scale = expected.to(ScalarType.Float64).abs().max().item<double>();
        return ModelTestData.MaxAbsDiff(actual, expected) / Math.Max(scale, 1e-300);
    }
}
