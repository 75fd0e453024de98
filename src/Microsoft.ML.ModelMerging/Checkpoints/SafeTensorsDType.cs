using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>Element types a safetensors file can hold. Float types are converted to float32 for math; the rest pass through.</summary>
public enum SafeTensorsDType
{
    /// <summary>64-bit IEEE float (<c>F64</c>).</summary>
    F64,

    /// <summary>32-bit IEEE float (<c>F32</c>), the type all merge math is done in.</summary>
    F32,

    /// <summary>16-bit IEEE half float (<c>F16</c>).</summary>
    F16,

    /// <summary>bfloat16 (<c>BF16</c>): float32's upper 16 bits.</summary>
    BF16,

    /// <summary>64-bit signed integer (<c>I64</c>).</summary>
    I64,

    /// <summary>32-bit signed integer (<c>I32</c>).</summary>
    I32,

    /// <summary>16-bit signed integer (<c>I16</c>).</summary>
    I16,

    /// <summary>8-bit signed integer (<c>I8</c>).</summary>
    I8,

    /// <summary>8-bit unsigned integer (<c>U8</c>).</summary>
    U8,

    /// <summary>Boolean, one byte per element (<c>BOOL</c>).</summary>
    Bool,
}

/// <summary>Conversions and facts about <see cref="SafeTensorsDType"/>: element sizes, header spellings, TorchSharp types.</summary>
public static class SafeTensorsDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 => 2,
        _ => 1,
    };

    /// <summary>True for F64, F32, F16 and BF16: the types merged as float32 (integer and boolean tensors are copied).</summary>
    public static bool IsFloatingPoint(this SafeTensorsDType dtype) =>
        dtype is SafeTensorsDType.F64 or SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16;

    /// <summary>The spelling used in safetensors headers ("F32", "BF16", ...).</summary>
    public static string ToHeaderName(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.Bool => "BOOL",
        _ => dtype.ToString(),
    };

    /// <summary>Parses a dtype as spelled in a safetensors header (<c>F32</c>, <c>BF16</c>, <c>BOOL</c>, ...; case-sensitive).</summary>
    /// <returns>False for a spelling safetensors does not define.</returns>
    public static bool TryParseHeaderName(string text, out SafeTensorsDType dtype)
    {
        switch (text)
        {
            case "F64": dtype = SafeTensorsDType.F64; return true;
            case "F32": dtype = SafeTensorsDType.F32; return true;
            case "F16": dtype = SafeTensorsDType.F16; return true;
            case "BF16": dtype = SafeTensorsDType.BF16; return true;
            case "I64": dtype = SafeTensorsDType.I64; return true;
            case "I32": dtype = SafeTensorsDType.I32; return true;
            case "I16": dtype = SafeTensorsDType.I16; return true;
            case "I8": dtype = SafeTensorsDType.I8; return true;
            case "U8": dtype = SafeTensorsDType.U8; return true;
            case "BOOL": dtype = SafeTensorsDType.Bool; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Parses the user-facing spelling of an output dtype: f32, f16, bf16 (case-insensitive).</summary>
    public static SafeTensorsDType ParseFloatOption(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" or "fp32" => SafeTensorsDType.F32,
        "f16" or "float16" or "fp16" or "half" => SafeTensorsDType.F16,
        "bf16" or "bfloat16" => SafeTensorsDType.BF16,
        _ => throw new ArgumentException($"Unknown output dtype '{text}': expected f32, f16 or bf16."),
    };

    /// <summary>The TorchSharp scalar type with the same element layout (U8 is <c>Byte</c>).</summary>
    public static torch.ScalarType ToScalarType(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 => torch.ScalarType.Float64,
        SafeTensorsDType.F32 => torch.ScalarType.Float32,
        SafeTensorsDType.F16 => torch.ScalarType.Float16,
        SafeTensorsDType.BF16 => torch.ScalarType.BFloat16,
        SafeTensorsDType.I64 => torch.ScalarType.Int64,
        SafeTensorsDType.I32 => torch.ScalarType.Int32,
        SafeTensorsDType.I16 => torch.ScalarType.Int16,
        SafeTensorsDType.I8 => torch.ScalarType.Int8,
        SafeTensorsDType.U8 => torch.ScalarType.Byte,
        SafeTensorsDType.Bool => torch.ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The safetensors dtype of a TorchSharp scalar type.</summary>
    /// <exception cref="NotSupportedException">The type has no safetensors spelling (complex types, for example).</exception>
    public static SafeTensorsDType FromScalarType(torch.ScalarType type) => type switch
    {
        torch.ScalarType.Float64 => SafeTensorsDType.F64,
        torch.ScalarType.Float32 => SafeTensorsDType.F32,
        torch.ScalarType.Float16 => SafeTensorsDType.F16,
        torch.ScalarType.BFloat16 => SafeTensorsDType.BF16,
        torch.ScalarType.Int64 => SafeTensorsDType.I64,
        torch.ScalarType.Int32 => SafeTensorsDType.I32,
        torch.ScalarType.Int16 => SafeTensorsDType.I16,
        torch.ScalarType.Int8 => SafeTensorsDType.I8,
        torch.ScalarType.Byte => SafeTensorsDType.U8,
        torch.ScalarType.Bool => SafeTensorsDType.Bool,
        _ => throw new NotSupportedException($"Tensors of type {type} cannot be stored in safetensors."),
    };
}
