using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Questions about a <see cref="torch.ScalarType"/> answered without TorchSharp's native library: <c>torch</c>'s own
/// helpers load libtorch on first use, which costs a streaming merge of float tensors half a second for nothing.
/// </summary>
internal static class ScalarTypes
{
    public static bool IsFloatingPoint(torch.ScalarType type) => type is torch.ScalarType.Float16 or torch.ScalarType.BFloat16
        or torch.ScalarType.Float32 or torch.ScalarType.Float64;
}
