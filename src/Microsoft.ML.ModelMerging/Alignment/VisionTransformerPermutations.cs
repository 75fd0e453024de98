using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// The permutation symmetries of our CLIP-architecture Vision Transformer (Hugging Face CLIP vision names): the residual
/// stream, each block's MLP hidden units, and each block's attention heads with the dimensions inside them.
/// </summary>
/// <remarks>
/// Why each one leaves the function unchanged:
/// <list type="bullet">
/// <item>Residual stream (one permutation of the width for the whole model): every write into the stream (class,
/// patch and position embeddings, out_proj and fc2 rows and biases) and every read from it (q/k/v and fc1 columns,
/// visual_projection or a head's columns) is permuted alike, and the blocks are pre-LN: LayerNorm's mean and variance
/// do not depend on the order of the channels, so with its gain and bias permuted it commutes with the permutation.</item>
/// <item>MLP hidden units: fc1 rows and bias and fc2 columns; quick_gelu/gelu act element by element.</item>
/// <item>Attention: heads are independent until out_proj sums them, so whole heads may trade places (q, k, v rows in
/// head-sized blocks, out_proj columns in head-sized blocks). Inside a head, the score qᵀk is a sum over the head's
/// dimensions, unchanged when q and k are reordered by one permutation (biases included); the scale 1/√d depends only on
/// the head size. The value dimensions of a head reach the output only through out_proj's matching columns, so they take
/// a permutation of their own.</item>
/// </list>
/// </remarks>
internal static class VisionTransformerPermutations
{
    /// <summary>The residual stream's permutation.</summary>
    public const string Residual = "residual";

    /// <summary>Block <paramref name="layer"/>'s MLP hidden units.</summary>
    public static string Mlp(int layer) => $"layers.{layer}.mlp";

    /// <summary>Block <paramref name="layer"/>'s query/key dimensions (heads moved as blocks, then dimensions within each head).</summary>
    public static string QueryKey(int layer) => $"layers.{layer}.attention.qk";

    /// <summary>Block <paramref name="layer"/>'s value dimensions (the same head blocks as <see cref="QueryKey"/>).</summary>
    public static string Value(int layer) => $"layers.{layer}.attention.v";

    /// <summary>The spec for <paramref name="config"/>: every tensor of <see cref="VisionTransformerNames.Shapes"/>.</summary>
    public static PermutationSpec Spec(VisionTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var sizes = new Dictionary<string, int>(StringComparer.Ordinal) { [Residual] = config.Width };
        var axes = new Dictionary<string, IReadOnlyList<string?>>(StringComparer.Ordinal);
        var groups = new List<PermutationGroup> { new(Residual, [Residual]) };
        const string r = Residual;

        void Vector(string name, string permutation) => axes[name] = [permutation];
        void LayerNorm(string prefix)
        {
            Vector(VisionTransformerNames.Weight(prefix), r);
            Vector(VisionTransformerNames.Bias(prefix), r);
        }

        // A linear layer's weight is [out, in]: rows follow its output's permutation, columns its input's.
        void Linear(string prefix, string output, string input)
        {
            axes[VisionTransformerNames.Weight(prefix)] = [output, input];
            Vector(VisionTransformerNames.Bias(prefix), output);
        }

        Vector(VisionTransformerNames.ClassEmbedding, r);
        axes[VisionTransformerNames.PatchEmbedding] = [r, null, null, null];
        axes[VisionTransformerNames.PositionEmbedding] = [null, r];
        LayerNorm(VisionTransformerNames.PreLayerNorm);
        for (int i = 0; i < config.Layers; i++)
        {
            var layer = VisionTransformerNames.Layer(i);
            string qk = QueryKey(i), v = Value(i), mlp = Mlp(i);
            sizes[qk] = sizes[v] = config.Width;
            sizes[mlp] = config.MlpSize;
            LayerNorm(layer.LayerNorm1);
            Linear(layer.QProj, qk, r);
            Linear(layer.KProj, qk, r);
            Linear(layer.VProj, v, r);
            Linear(layer.OutProj, r, v);
            LayerNorm(layer.LayerNorm2);
            Linear(layer.Fc1, mlp, r);
            Linear(layer.Fc2, r, mlp);
            groups.Add(new($"layers.{i}.attention", [qk, v], config.Heads));
            groups.Add(new(mlp, [mlp]));
        }

        LayerNorm(VisionTransformerNames.PostLayerNorm);
        if (config.ProjectionDim is not null) axes[VisionTransformerNames.VisualProjection] = [null, r];
        return new PermutationSpec(sizes, axes, groups);
    }

    /// <summary>
    /// The permutation of a head's feature axis (its weight's columns): the residual stream when the features are the
    /// post-LayerNorm CLS token, none when a visual_projection maps them out of the stream first.
    /// </summary>
    public static string? HeadFeatures(VisionTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.ProjectionDim is null ? Residual : null;
    }
}
