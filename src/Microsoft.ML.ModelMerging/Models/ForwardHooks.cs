using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// Extension points of <see cref="VisionTransformer.Forward(VisionTransformerConfig, IReadOnlyDictionary{string, Tensor}, Tensor, ForwardHooks?)"/>
/// so merging methods change the computation without copying modules. Every hook is optional; tensors are batched.
/// Tensors a hook creates belong to the caller's dispose scope like any other intermediate of the forward.
/// </summary>
internal sealed record ForwardHooks
{
    /// <summary>
    /// Replaces a block's MLP: called with the block index and the MLP input (after <c>layer_norm2</c> and the
    /// <see cref="ActivationSite.MlpInput"/> transform) [B,T,W]; returns the MLP output [B,T,W] to add to the residual,
    /// or null for the default fc1→activation→fc2. When it returns a tensor, the block's <c>fc1</c>/<c>fc2</c> adapters
    /// and the <see cref="ActivationSite.MlpHidden"/> transform do not run. WEMoE plugs its per-sample experts in here.
    /// </summary>
    public Func<int, Tensor, Tensor?>? MlpOverride { get; init; }

    /// <summary>
    /// Called at every <see cref="ActivationSite"/> with the block index (-1 for embeddings) and the activation; returns
    /// the activation to continue with (same shape), e.g. a per-channel affine correction. Return the input unchanged
    /// to only observe.
    /// </summary>
    public Func<ActivationSite, int, Tensor, Tensor>? SiteTransform { get; init; }

    /// <summary>
    /// Called after each linear layer of the blocks (q, k, v, out, fc1, fc2) with the layer's full prefix (e.g.
    /// <c>vision_model.encoder.layers.3.mlp.fc1</c>), its input and its output; returns the output to use, e.g.
    /// <c>output + scale·(input·Aᵀ)·Bᵀ</c> for LoRA.
    /// </summary>
    public Func<string, Tensor, Tensor, Tensor>? LinearAdapter { get; init; }
}
