namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>How a merge parameter's text is read.</summary>
public enum MergeParameterKind
{
    /// <summary>A finite real number, e.g. <c>0.3</c>.</summary>
    Number,

    /// <summary>A whole number, e.g. <c>42</c>.</summary>
    Integer,

    /// <summary>One word out of a fixed list, e.g. <c>global</c>.</summary>
    Choice,

    /// <summary>One number for every expert, or a comma-separated number per expert, e.g. <c>0.2,0.4,0.6</c>.</summary>
    NumberPerExpert,
}
