using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Stores a vector comparison's lanes (−1 true, 0 false) as the 0/1 bytes of a boolean tensor.</summary>
internal static class MaskBytes
{
    /// <summary>Entry b: eight bytes, byte k = bit k of b (as laid out in memory), so eight lanes cost one store.</summary>
    private static readonly ulong[] Spread = [.. Enumerable.Range(0, 256).Select(b =>
        MemoryMarshal.Read<ulong>(Enumerable.Range(0, 8).Select(k => (byte)((b >> k) & 1)).ToArray()))];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector<int> lanes, Span<byte> destination)
    {
        uint bits = Vector<int>.Count switch
        {
            4 => Vector128.ExtractMostSignificantBits(lanes.AsVector128()),
            8 => Vector256.ExtractMostSignificantBits(lanes.AsVector256()),
            16 => (uint)Vector512.ExtractMostSignificantBits(lanes.AsVector512()),
            _ => Fallback(lanes),
        };
        if (Vector<int>.Count < 8)
        {
            for (int k = 0; k < Vector<int>.Count; k++) destination[k] = (byte)((bits >> k) & 1);
            return;
        }

        for (int k = 0; k < Vector<int>.Count; k += 8) MemoryMarshal.Write(destination.Slice(k), Spread[(bits >> k) & 0xFF]);
    }

    private static uint Fallback(Vector<int> lanes)
    {
        uint bits = 0;
        for (int k = 0; k < Vector<int>.Count; k++) if (lanes[k] != 0) bits |= 1u << k;
        return bits;
    }
}
