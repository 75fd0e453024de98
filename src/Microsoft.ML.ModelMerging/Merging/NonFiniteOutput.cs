using System.Numerics;
using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Refuses merged values that are not finite once stored: NaN, ±∞, or a finite float32 past the range of the stored
/// dtype (|v| ≥ 65520 becomes ∞ in float16). Inputs are checked for NaN/Inf already; this catches what the arithmetic
/// makes of finite inputs (<c>--lambda 1e39</c>, an expert near float range), so no written model holds such a value.
/// </summary>
internal static class NonFiniteOutput
{
    /// <summary>The smallest magnitude that is no longer finite when stored as <paramref name="stored"/>.</summary>
    private static float Limit(SafeTensorsDType stored) => stored switch
    {
        SafeTensorsDType.F16 => 65520f,                                   // rounds to +∞ (max half 65504)
        SafeTensorsDType.BF16 => BitConverter.UInt32BitsToSingle(0x7F7F8000), // ties to even round up to +∞
        _ => float.PositiveInfinity,
    };

    /// <summary>Checks float32 values about to be stored as <paramref name="stored"/>, given in consecutive parts.</summary>
    public static void Check(IReadOnlyList<ReadOnlyMemory<float>> parts, SafeTensorsDType stored, string tensor)
    {
        float limit = Limit(stored);
        long offset = 0;
        foreach (var part in parts)
        {
            int bad = FirstBad(part.Span, limit);
            if (bad >= 0) throw Error(tensor, offset + bad, part.Span[bad], stored);
            offset += part.Length;
        }
    }

    /// <summary>Checks single values (e.g. the entries a merge patches afterwards), <paramref name="indices"/> naming them.</summary>
    public static void Check(IReadOnlyList<long> indices, ReadOnlySpan<float> values, SafeTensorsDType stored, string tensor)
    {
        int bad = FirstBad(values, Limit(stored));
        if (bad >= 0) throw Error(tensor, indices[bad], values[bad], stored);
    }

    /// <summary>Checks a merged tensor about to be stored as <paramref name="stored"/> (non-float tensors pass).</summary>
    public static void Check(Tensor merged, SafeTensorsDType stored, string tensor)
    {
        if (!merged.is_floating_point()) return;
        using var scope = NewDisposeScope();
        var asStored = stored.IsFloatingPoint() && merged.dtype != stored.ToScalarType() ? merged.to_type(stored.ToScalarType()) : merged;
        var finite = isfinite(asStored);
        if (finite.all().item<bool>()) return;
        long index = (~finite).flatten().nonzero()[0, 0].item<long>();
        throw Error(tensor, index, merged.flatten()[index].to_type(ScalarType.Float32).item<float>(), stored);
    }

    private static int FirstBad(ReadOnlySpan<float> values, float limit)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var max = new Vector<float>(limit);
            for (; i + Vector<float>.Count <= values.Length; i += Vector<float>.Count)
                if (!Vector.LessThanAll(Vector.Abs(new Vector<float>(values[i..])), max)) break; // NaN compares false
        }
        for (; i < values.Length; i++)
            if (!(Math.Abs(values[i]) < limit)) return i;
        return -1;
    }

    private static MergeInputException Error(string tensor, long index, float value, SafeTensorsDType stored) =>
        new($"merged tensor '{tensor}' is not finite at entry {index} (value {value} stored as {stored.ToHeaderName()}): " +
            "nothing was written; lower the scaling (e.g. --lambda) or check the experts' magnitudes.", tensor);
}
