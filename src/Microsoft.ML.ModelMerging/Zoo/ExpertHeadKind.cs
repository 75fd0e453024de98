namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>How an expert's frozen head is made from a few labeled images per class before fine-tuning.</summary>
public enum ExpertHeadKind
{
    /// <summary>A linear probe trained on the shots' frozen pre-trained features (FusionBench's heads for non-CLIP models).</summary>
    LinearProbe,

    /// <summary>A CLIP-style head of class prototypes (mean normalised features of the shots) with a calibrated logit scale.</summary>
    Prototype,
}
