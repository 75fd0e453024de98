using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Models;

internal sealed partial class VisionTransformer
{
    /// <summary>
    /// The forward pass over an explicit dictionary of weights (HF CLIP names, see <see cref="VisionTransformerNames"/>),
    /// written with functional ops so callers can substitute merged, perturbed or trainable tensors without modules.
    /// </summary>
    /// <param name="config">Architecture; it must match the weights' shapes.</param>
    /// <param name="weights">Tensors by name; only the ones the forward reaches are read (an MLP replaced by
    /// <see cref="ForwardHooks.MlpOverride"/> needs no fc1/fc2), each checked against its expected shape.</param>
    /// <param name="images">Pixels in [0,1], [B,C,H,W] or flattened channel-major [B,C·H·W]; converted to the weights'
    /// dtype and normalised with the config's mean/std inside.</param>
    /// <param name="hooks">Optional extension points.</param>
    /// <returns>Features [B, <see cref="VisionTransformerConfig.FeatureDim"/>]: projection(post_layernorm(CLS)).</returns>
    public static Tensor Forward(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images, ForwardHooks? hooks = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(images);
        config.Validate();
        var lookup = new ConfigWeights(config, weights);

        Tensor tokens = Embed(config, lookup, images, hooks);
        tokens = LayerNorm(config, lookup, VisionTransformerNames.PreLayerNorm, tokens);
        for (int block = 0; block < config.Layers; block++)
        {
            tokens = EncoderBlock(config, lookup, block, tokens, hooks);
        }

        Tensor features = LayerNorm(config, lookup, VisionTransformerNames.PostLayerNorm, tokens.select(1, 0));
        return config.ProjectionDim is null ? features : linear(features, lookup.Get(VisionTransformerNames.VisualProjection));
    }

    /// <summary>Normalised pixels → patch tokens with the CLS token in front, plus position embeddings [B,T,W].</summary>
    private static Tensor Embed(VisionTransformerConfig config, ConfigWeights lookup, Tensor images, ForwardHooks? hooks)
    {
        Tensor patchWeight = lookup.Get(VisionTransformerNames.PatchEmbedding);
        Tensor pixels = NormalizePixels(config, ToImageBatch(config, images).to(patchWeight.dtype), patchWeight.device);

        long batch = pixels.shape[0];
        Tensor patches = conv2d(pixels, patchWeight, strides: [config.PatchSize, config.PatchSize])
            .flatten(2).transpose(1, 2);                                   // [B,N,W]
        Tensor cls = lookup.Get(VisionTransformerNames.ClassEmbedding).view(1, 1, config.Width).expand(batch, 1, config.Width);
        Tensor tokens = torch.cat([cls, patches], 1).Plus(lookup.Get(VisionTransformerNames.PositionEmbedding).unsqueeze(0));
        return Site(hooks, ActivationSite.Embeddings, -1, tokens);
    }

    private static Tensor ToImageBatch(VisionTransformerConfig config, Tensor images)
    {
        long[] shape = images.shape;
        long pixelsPerImage = (long)config.Channels * config.ImageSize * config.ImageSize;
        if (!images.is_floating_point())
        {
            throw new ArgumentException($"Images must be a floating-point tensor of pixels in [0,1] (got dtype {images.dtype}).", nameof(images));
        }

        if (shape.Length == 2 && shape[1] == pixelsPerImage)
        {
            return images.view(shape[0], config.Channels, config.ImageSize, config.ImageSize);
        }

        if (shape.Length == 4 && shape[1] == config.Channels && shape[2] == config.ImageSize && shape[3] == config.ImageSize)
        {
            return images;
        }

        throw new ArgumentException(
            $"Images have shape {NamedTensorShape.Format(shape)}; the config expects [B, {config.Channels}, {config.ImageSize}, {config.ImageSize}] " +
            $"or flattened [B, {pixelsPerImage}].", nameof(images));
    }

    private static Tensor NormalizePixels(VisionTransformerConfig config, Tensor pixels, Device device)
    {
        pixels = pixels.to(device);
        Tensor mean = torch.tensor(config.MeanPerChannel(), dtype: pixels.dtype, device: device).view(1, config.Channels, 1, 1);
        Tensor std = torch.tensor(config.StdPerChannel(), dtype: pixels.dtype, device: device).view(1, config.Channels, 1, 1);
        return (pixels - mean) / std;
    }

    /// <summary>Pre-LN block: x + attn(ln1(x)), then + mlp(ln2(x)).</summary>
    private static Tensor EncoderBlock(VisionTransformerConfig config, ConfigWeights lookup, int block, Tensor x, ForwardHooks? hooks)
    {
        var names = VisionTransformerNames.Layer(block);
        x = x.Plus(SelfAttention(config, lookup, names, LayerNorm(config, lookup, names.LayerNorm1, x), hooks));

        Tensor mlpInput = Site(hooks, ActivationSite.MlpInput, block, LayerNorm(config, lookup, names.LayerNorm2, x));
        Tensor? mlpOutput = hooks?.MlpOverride?.Invoke(block, mlpInput);
        if (mlpOutput is null)
        {
            Tensor hidden = Site(hooks, ActivationSite.MlpHidden, block, Linear(lookup, names.Fc1, mlpInput, hooks));
            mlpOutput = Linear(lookup, names.Fc2, config.Activation.Apply(hidden), hooks);
        }
        else
        {
            RequireSameShape(mlpOutput, mlpInput, $"MlpOverride output of block {block}");
        }

        return Site(hooks, ActivationSite.BlockOutput, block, x.Plus(mlpOutput));
    }

    private static Tensor SelfAttention(VisionTransformerConfig config, ConfigWeights lookup, EncoderLayerNames names, Tensor x, ForwardHooks? hooks)
    {
        long batch = x.shape[0], tokens = x.shape[1];
        Tensor SplitHeads(Tensor t) => t.view(batch, tokens, config.Heads, config.HeadSize).transpose(1, 2);  // [B,H,T,D]

        Tensor q = SplitHeads(Linear(lookup, names.QProj, x, hooks));
        Tensor k = SplitHeads(Linear(lookup, names.KProj, x, hooks));
        Tensor v = SplitHeads(Linear(lookup, names.VProj, x, hooks));
        // Default scale 1/sqrt(head size) is CLIP's.
        Tensor context = scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, config.Width);
        context = Site(hooks, ActivationSite.AttentionContext, names.Index, context);
        return Linear(lookup, names.OutProj, context, hooks);
    }

    private static Tensor Linear(ConfigWeights lookup, string prefix, Tensor input, ForwardHooks? hooks)
    {
        Tensor output = linear(input, lookup.Get(VisionTransformerNames.Weight(prefix)), lookup.Get(VisionTransformerNames.Bias(prefix)));
        if (hooks?.LinearAdapter is null)
        {
            return output;
        }

        Tensor adapted = hooks.LinearAdapter(prefix, input, output);
        RequireSameShape(adapted, output, $"LinearAdapter output for '{prefix}'");
        return adapted;
    }

    private static Tensor LayerNorm(VisionTransformerConfig config, ConfigWeights lookup, string prefix, Tensor x) =>
        layer_norm(x, [config.Width], lookup.Get(VisionTransformerNames.Weight(prefix)), lookup.Get(VisionTransformerNames.Bias(prefix)), config.LayerNormEps);

    private static Tensor Site(ForwardHooks? hooks, ActivationSite site, int block, Tensor activation)
    {
        if (hooks?.SiteTransform is null)
        {
            return activation;
        }

        Tensor transformed = hooks.SiteTransform(site, block, activation);
        RequireSameShape(transformed, activation, $"SiteTransform output at {site} of block {block}");
        return transformed;
    }

    private static void RequireSameShape(Tensor actual, Tensor expected, string what)
    {
        if (!actual.shape.AsSpan().SequenceEqual(expected.shape))
        {
            throw new InvalidOperationException(
                $"{what} has shape {NamedTensorShape.Format(actual.shape)}; expected {NamedTensorShape.Format(expected.shape)}.");
        }
    }
}
