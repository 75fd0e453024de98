namespace Microsoft.ML.ModelMerging.Models;

/// <summary>How a <see cref="ClassificationHead"/> turns features into logits.</summary>
public enum ClassificationHeadKind
{
    /// <summary>logits = features·Wᵀ + b (a trained linear probe).</summary>
    Linear,

    /// <summary>logits = scale·normalize(features)·normalize(E)ᵀ with one embedding per class (CLIP zero-shot style).</summary>
    Clip,
}
