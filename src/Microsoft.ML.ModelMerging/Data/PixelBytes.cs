namespace Microsoft.ML.ModelMerging.Data;

/// <summary>8-bit intensities to the [0, 1] floats every data set here holds.</summary>
internal static class PixelBytes
{
    /// <summary>Writes <c>b / 255</c> for every byte (the exact quotient rounded once, so 255 is exactly 1).</summary>
    public static void ToUnitRange(ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException($"Destination holds {destination.Length} values, {source.Length} needed.", nameof(destination));
        }

        for (int i = 0; i < source.Length; i++)
        {
            destination[i] = source[i] / 255f;
        }
    }
}
