namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// Tensor names of the Vision Transformer: exactly Hugging Face CLIP's vision names, so a CLIPVisionModel or CLIPModel
/// checkpoint loads by name.
/// </summary>
internal static class VisionTransformerNames
{
    public const string ClassEmbedding = "vision_model.embeddings.class_embedding";
    public const string PatchEmbedding = "vision_model.embeddings.patch_embedding.weight";
    public const string PositionEmbedding = "vision_model.embeddings.position_embedding.weight";

    /// <summary>Prefix of the LayerNorm before the encoder; the misspelling is Hugging Face's.</summary>
    public const string PreLayerNorm = "vision_model.pre_layrnorm";

    /// <summary>Prefix of the LayerNorm applied to the CLS token after the encoder.</summary>
    public const string PostLayerNorm = "vision_model.post_layernorm";

    public const string VisualProjection = "visual_projection.weight";

    /// <summary>Hugging Face's constant index buffer; not a weight, skipped when loading.</summary>
    public const string PositionIds = "vision_model.embeddings.position_ids";

    /// <summary>Names of one block's sub-layers.</summary>
    public static EncoderLayerNames Layer(int index) => new(index);

    public static string Weight(string prefix) => prefix + ".weight";

    public static string Bias(string prefix) => prefix + ".bias";

    /// <summary>Whether <paramref name="name"/> is a tensor of a block's MLP (<c>fc1</c> or <c>fc2</c>, weight or bias).</summary>
    public static bool IsMlp(string name) =>
        name.StartsWith("vision_model.encoder.layers.", StringComparison.Ordinal) && name.Contains(".mlp.", StringComparison.Ordinal);

    /// <summary>
    /// Tensors of a full CLIPModel checkpoint that are not part of the vision tower (text tower, text projection,
    /// logit scale) plus the position-id buffer: loading skips them instead of calling them unexpected.
    /// </summary>
    public static bool IsIgnoredWhenLoading(string name) =>
        name == PositionIds
        || name == "logit_scale"
        || name.StartsWith("text_model.", StringComparison.Ordinal)
        || name.StartsWith("text_projection.", StringComparison.Ordinal);

    /// <summary>Every tensor of a model with this config, in forward order, with its expected shape.</summary>
    public static IReadOnlyList<NamedTensorShape> Shapes(VisionTransformerConfig config)
    {
        config.Validate();
        long w = config.Width;
        var shapes = new List<NamedTensorShape>
        {
            new(ClassEmbedding, [w]),
            new(PatchEmbedding, [w, config.Channels, config.PatchSize, config.PatchSize]),
            new(PositionEmbedding, [config.TokenCount, w]),
            new(Weight(PreLayerNorm), [w]),
            new(Bias(PreLayerNorm), [w]),
        };
        for (int i = 0; i < config.Layers; i++)
        {
            var layer = Layer(i);
            foreach (string projection in new[] { layer.QProj, layer.KProj, layer.VProj, layer.OutProj })
            {
                shapes.Add(new(Weight(projection), [w, w]));
                shapes.Add(new(Bias(projection), [w]));
            }

            shapes.Add(new(Weight(layer.LayerNorm1), [w]));
            shapes.Add(new(Bias(layer.LayerNorm1), [w]));
            shapes.Add(new(Weight(layer.Fc1), [config.MlpSize, w]));
            shapes.Add(new(Bias(layer.Fc1), [config.MlpSize]));
            shapes.Add(new(Weight(layer.Fc2), [w, config.MlpSize]));
            shapes.Add(new(Bias(layer.Fc2), [w]));
            shapes.Add(new(Weight(layer.LayerNorm2), [w]));
            shapes.Add(new(Bias(layer.LayerNorm2), [w]));
        }

        shapes.Add(new(Weight(PostLayerNorm), [w]));
        shapes.Add(new(Bias(PostLayerNorm), [w]));
        if (config.ProjectionDim is int projectionDim)
        {
            shapes.Add(new(VisualProjection, [projectionDim, w]));
        }

        return shapes;
    }
}
