namespace Microsoft.ML.ModelMerging.Models;

/// <summary>Points of the forward pass where <see cref="ForwardHooks.SiteTransform"/> sees and may replace activations.</summary>
public enum ActivationSite
{
    /// <summary>Tokens after adding position embeddings, before the pre-LayerNorm [B,T,W]; block index -1.</summary>
    Embeddings,

    /// <summary>Attention output with heads concatenated, before <c>out_proj</c> [B,T,W].</summary>
    AttentionContext,

    /// <summary>Input of the MLP, after <c>layer_norm2</c> [B,T,W].</summary>
    MlpInput,

    /// <summary>MLP hidden pre-activation, the <c>fc1</c> output [B,T,MlpSize].</summary>
    MlpHidden,

    /// <summary>Residual stream after the block [B,T,W].</summary>
    BlockOutput,
}
