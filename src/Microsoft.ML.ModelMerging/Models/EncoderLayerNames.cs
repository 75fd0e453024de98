namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// Hugging Face CLIP prefixes of one transformer block, e.g. <c>vision_model.encoder.layers.3.mlp.fc1</c>; append
/// <c>.weight</c>/<c>.bias</c> (see <see cref="VisionTransformerNames.Weight"/>) for tensor names.
/// </summary>
internal sealed record EncoderLayerNames(int Index)
{
    public string Prefix { get; } = $"vision_model.encoder.layers.{Index}";

    public string QProj => Prefix + ".self_attn.q_proj";

    public string KProj => Prefix + ".self_attn.k_proj";

    public string VProj => Prefix + ".self_attn.v_proj";

    public string OutProj => Prefix + ".self_attn.out_proj";

    public string LayerNorm1 => Prefix + ".layer_norm1";

    public string LayerNorm2 => Prefix + ".layer_norm2";

    public string Fc1 => Prefix + ".mlp.fc1";

    public string Fc2 => Prefix + ".mlp.fc2";

    /// <summary>The six linear layers of the block in forward order (q, k, v, out, fc1, fc2).</summary>
    public IReadOnlyList<string> Linears => [QProj, KProj, VProj, OutProj, Fc1, Fc2];
}
