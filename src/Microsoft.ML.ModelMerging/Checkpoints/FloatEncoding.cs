using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Conversions between float32 values and the stored floating-point dtypes of a checkpoint, without loading libtorch
/// (a streaming merge of float tensors needs nothing else from it). Numbers come out bit for bit as TorchSharp's
/// <c>to_type</c> stores them (half types rounded to nearest, ties to even); a NaN stays a NaN, though its payload
/// bits may differ (libtorch's own scalar and vectorised conversions disagree on them too).
/// </summary>
internal static class FloatEncoding
{
    public static bool CanEncode(SafeTensorsDType dtype) =>
        dtype is SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.F64;

    /// <summary>Stores <paramref name="values"/> as <paramref name="dtype"/> into <paramref name="destination"/> (values.Length × element size bytes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Encode(ReadOnlySpan<float> values, SafeTensorsDType dtype, Span<byte> destination)
    {
        switch (dtype)
        {
            case SafeTensorsDType.F32:
                MemoryMarshal.AsBytes(values).CopyTo(destination);
                break;
            case SafeTensorsDType.F16:
                TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(destination));
                break;
            case SafeTensorsDType.BF16:
                var bits = MemoryMarshal.Cast<float, uint>(values);
                var stored = MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < bits.Length; i++)
                {
                    uint b = bits[i];
                    // Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, keep the high half.
                    stored[i] = (b & 0x7FFF_FFFF) > 0x7F80_0000 ? (ushort)((b >> 16) | 0x0040) : (ushort)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
                }

                break;
            case SafeTensorsDType.F64:
                var doubles = MemoryMarshal.Cast<byte, double>(destination);
                for (int i = 0; i < values.Length; i++) doubles[i] = values[i];
                break;
            default:
                throw new NotSupportedException($"Float values cannot be stored as {dtype}.");
        }
    }

    /// <summary>Reads stored <paramref name="dtype"/> values as float32 (exact for half types, rounded to nearest for float64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Decode(ReadOnlySpan<byte> raw, SafeTensorsDType dtype, Span<float> destination)
    {
        switch (dtype)
        {
            case SafeTensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(raw).CopyTo(destination);
                break;
            case SafeTensorsDType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw), destination);
                break;
            case SafeTensorsDType.BF16:
                var bits = MemoryMarshal.Cast<byte, ushort>(raw);
                var wide = MemoryMarshal.Cast<float, uint>(destination);
                for (int i = 0; i < bits.Length; i++) wide[i] = (uint)bits[i] << 16;
                break;
            case SafeTensorsDType.F64:
                var doubles = MemoryMarshal.Cast<byte, double>(raw);
                for (int i = 0; i < doubles.Length; i++) destination[i] = (float)doubles[i];
                break;
            default:
                throw new NotSupportedException($"{dtype} values cannot be read as float32.");
        }
    }
}
