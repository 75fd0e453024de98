using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// A model whose few parameters are learned by <see cref="TestTimeAdaptation"/>: WEMoE routers, AdaMerging
/// coefficients. Everything else the forward reads is frozen.
/// </summary>
internal interface IAdaptableModel
{
    /// <summary>
    /// The parameters adaptation trains, by a name unique within the model (the name they are checkpointed under).
    /// No other tensor of the model may require gradients.
    /// </summary>
    IReadOnlyDictionary<string, Parameter> AdaptedParameters { get; }

    /// <summary>Features [B, FeatureDim] of pixels in [0,1] ([B,C,H,W] or flattened), differentiable in <see cref="AdaptedParameters"/>.</summary>
    Tensor Forward(Tensor images);

    /// <summary>
    /// String metadata describing how the model was built (method, options, config); stored in adaptation
    /// checkpoints so a checkpoint is only resumed into a model built the same way.
    /// </summary>
    IReadOnlyDictionary<string, string> Metadata { get; }
}
