namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Over what TIES finds each task's magnitude threshold (and its zero-breaking majority sign).</summary>
public enum TiesTrimScope
{
    /// <summary>FusionBench: one threshold per task over all merged tensors of the model, exact, found in statistics passes.</summary>
    Global,

    /// <summary>mergekit: one threshold per task per tensor.</summary>
    PerTensor,
}
