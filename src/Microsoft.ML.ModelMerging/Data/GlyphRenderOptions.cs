namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// How glyph images vary. Each image draws its own font (among those that have the character), size, aspect,
/// rotation, position and weight from these ranges. The glyph's outline box is scaled to fit, notMNIST-style, so
/// every font contributes a glyph of comparable size whatever its metrics.
/// </summary>
public sealed record GlyphRenderOptions
{
    /// <summary>Side of the square image in pixels.</summary>
    public int Size { get; init; } = 28;

    /// <summary>Smallest longer side of the glyph box, as a fraction of <see cref="Size"/>.</summary>
    public float MinFill { get; init; } = 0.6f;

    /// <summary>Largest longer side of the glyph box, as a fraction of <see cref="Size"/> (MNIST digits fill about 20/28).</summary>
    public float MaxFill { get; init; } = 0.8f;

    /// <summary>Horizontal stretch factor range is [1/(1+s), 1+s].</summary>
    public float MaxStretch { get; init; } = 0.15f;

    /// <summary>Rotation is uniform in ±this many degrees.</summary>
    public float MaxRotationDegrees { get; init; } = 10f;

    /// <summary>The glyph centre moves up to this many pixels in x and in y.</summary>
    public float MaxShift { get; init; } = 2f;

    /// <summary>Outlines are thickened by a stroke of up to this many pixels (weight variation beyond the font's own).</summary>
    public float MaxBoldness { get; init; } = 1.2f;

    internal void Validate()
    {
        if (Size <= 0 || MinFill <= 0 || MaxFill > 1 || MinFill > MaxFill || MaxStretch < 0 || MaxRotationDegrees < 0 ||
            MaxRotationDegrees > 180 || MaxShift < 0 || MaxBoldness < 0)
        {
            throw new ArgumentException($"Invalid glyph rendering options: {this}.");
        }
    }
}
