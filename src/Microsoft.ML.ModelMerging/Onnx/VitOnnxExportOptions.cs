namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>Options of <see cref="DenseVitOnnxExporter"/> (and of exporters derived from it).</summary>
public sealed record VitOnnxExportOptions
{
    /// <summary>
    /// Storage of weight matrices (rank ≥ 2: patch embedding, position embeddings, attention/MLP/projection/head
    /// matrices). Vectors (biases, LayerNorm parameters, class embedding, logit scale) always stay float32: they are a
    /// negligible share of the bytes and LayerNorm is the most precision-sensitive.
    /// </summary>
    public OnnxWeightPrecision WeightPrecision { get; init; } = OnnxWeightPrecision.Float32;

    /// <summary>Whether the <c>scores_&lt;task&gt;</c> outputs are softmax probabilities (default, ML.NET's convention) or raw logits.</summary>
    public OnnxScoreKind Scores { get; init; } = OnnxScoreKind.Probabilities;

    /// <summary>Whether to add the output <c>features</c> [batch, FeatureDim] (what the heads see) next to the scores.</summary>
    public bool IncludeFeatures { get; init; } = true;

    /// <summary>Optional description, written as the model's <c>doc_string</c>.</summary>
    public string? Description { get; init; }

    /// <summary>
    /// Extra <c>metadata_props</c> entries (e.g. the merge method and its parameters). Keys the exporter writes itself
    /// (<see cref="VitOnnxModelInfo"/>) are refused.
    /// </summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
}
