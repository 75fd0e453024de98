using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>Element types a safetensors file can hold. Float types are converted to float32 for math; the rest pass through.</summary>
public enum SafeTensorsDType
{
    F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool,
}

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

    public static bool IsFloatingPoint(this SafeTensorsDType dtype) =>
        dtype is SafeTensorsDType.F64 or SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16;

    /// <summary>The spelling used in safetensors headers ("F32", "BF16", ...).</summary>
    public static string ToHeaderName(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.Bool => "BOOL",
        _ => dtype.ToString(),
    };

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
