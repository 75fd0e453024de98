namespace Microsoft.ML.ModelMerging.Data;

/// <summary>How decoded images become channels.</summary>
public enum ImageColorMode
{
    /// <summary>One channel: luma 0.299·R + 0.587·G + 0.114·B (ITU-R BT.601, as ML.NET and PIL compute it).</summary>
    Grayscale,

    /// <summary>Three channels R, G, B.</summary>
    Rgb,
}
