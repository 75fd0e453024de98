using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>The MLP non-linearity of the transformer blocks.</summary>
public enum VisionActivation
{
    /// <summary>OpenAI CLIP's <c>quick_gelu</c>: x·sigmoid(1.702x).</summary>
    QuickGelu,

    /// <summary>Exact GELU, 0.5·x·(1 + erf(x/√2)) (Hugging Face <c>gelu</c>).</summary>
    Gelu,
}

/// <summary>Spelling of <see cref="VisionActivation"/> in Hugging Face configs and our metadata, and its tensor form.</summary>
internal static class VisionActivations
{
    /// <summary>The Hugging Face <c>hidden_act</c> spelling.</summary>
    public static string ToConfigName(this VisionActivation activation) => activation switch
    {
        VisionActivation.QuickGelu => "quick_gelu",
        VisionActivation.Gelu => "gelu",
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown activation."),
    };

    /// <summary>Parses <c>quick_gelu</c> or <c>gelu</c>; tanh-approximated variants are refused rather than silently changed.</summary>
    public static VisionActivation Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "quick_gelu" or "quickgelu" => VisionActivation.QuickGelu,
        "gelu" => VisionActivation.Gelu,
        _ => throw new FormatException(
            $"Unsupported activation '{name}': expected 'quick_gelu' (x·sigmoid(1.702x)) or 'gelu' (exact erf form)."),
    };

    /// <summary>Applies the activation element-wise.</summary>
    public static Tensor Apply(this VisionActivation activation, Tensor x) => activation switch
    {
        VisionActivation.QuickGelu => x * torch.sigmoid(x.Times(1.702)),
        VisionActivation.Gelu => nn.functional.gelu(x),
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown activation."),
    };
}
