using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

/// <summary>
/// WEMoE written the slow, obvious way for one sample at a time: the router applied to every token and averaged, MLP
/// weights merged tensor by tensor from the experts' full weights, then fc1 → activation → fc2.
/// </summary>
internal static class ReferenceWeightEnsembling
{
    /// <summary>Routing weights [E] of one sample's MLP input tokens [T,W], from the router's parameters.</summary>
    public static Tensor Route(WeightEnsemblingMoE model, int block, Tensor tokens)
    {
        string prefix = model.Options.ShareRouter ? "router.shared." : $"router.layers.{block}.";
        Tensor P(string name) => model.RouterParameters[prefix + name];
        Tensor perToken = model.Options.RouterDepth switch
        {
            0 => P("weight").unsqueeze(0),
            1 => tokens.matmul(P("fc.weight").t()).Plus(P("fc.bias")),
            _ => relu(tokens.matmul(P("fc1.weight").t()).Plus(P("fc1.bias"))).matmul(P("fc2.weight").t()).Plus(P("fc2.bias")),
        };
        Tensor mean = perToken.mean([0]);
        if (!model.Options.SoftmaxRouting) return mean;
        // Softmax over the experts, written out: exp of the shifted values over their sum.
        Tensor shifted = (mean - mean.max()).exp();
        return shifted / shifted.sum();
    }

    /// <summary>The MLP of one sample [T,W] with weights θ0 + Σ_i r_i·(θ_i − θ0).</summary>
    public static Tensor Mlp(AdaptationTestData data, int block, Tensor tokens, Tensor routing)
    {
        double[] r = routing.to(ScalarType.Float64).data<double>().ToArray();
        var names = VisionTransformerNames.Layer(block);
        Tensor W(string name) => data.Combine(name, r);
        Tensor hidden = tokens.matmul(W(VisionTransformerNames.Weight(names.Fc1)).t()).Plus(W(VisionTransformerNames.Bias(names.Fc1)));
        Tensor activated = hidden * torch.sigmoid(hidden.Times(1.702));
        return activated.matmul(W(VisionTransformerNames.Weight(names.Fc2)).t()).Plus(W(VisionTransformerNames.Bias(names.Fc2)));
    }

    /// <summary>Features of each image computed alone (a batch of one), so routing is per sample by construction.</summary>
    public static Tensor PerSampleLoop(WeightEnsemblingMoE model, AdaptationTestData data, Tensor images)
    {
        var taskArithmetic = data.TaskArithmetic(model.Options.Lambda);
        var hooks = new ForwardHooks
        {
            MlpOverride = (block, x) => Mlp(data, block, x[0], Route(model, block, x[0])).unsqueeze(0),
        };
        var rows = new List<Tensor>();
        for (long b = 0; b < images.shape[0]; b++)
        {
            rows.Add(VisionTransformer.Forward(data.Config, taskArithmetic, images.narrow(0, b, 1), hooks));
        }

        return cat(rows, 0);
    }

    /// <summary>Features of the batch where every block merges one MLP from the batch mean of the per-sample routing weights.</summary>
    public static Tensor BatchMeanRouting(WeightEnsemblingMoE model, AdaptationTestData data, Tensor images)
    {
        var hooks = new ForwardHooks
        {
            MlpOverride = (block, x) =>
            {
                Tensor mean = stack(Enumerable.Range(0, (int)x.shape[0]).Select(b => Route(model, block, x[b])), 0).mean([0]);
                return stack(Enumerable.Range(0, (int)x.shape[0]).Select(b => Mlp(data, block, x[b], mean)), 0);
            },
        };
        return VisionTransformer.Forward(data.Config, data.TaskArithmetic(model.Options.Lambda), images, hooks);
    }
}
