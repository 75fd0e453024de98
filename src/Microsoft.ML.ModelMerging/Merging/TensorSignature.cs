using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>A tensor's dtype and shape, known before its data is read (e.g. from a checkpoint header).</summary>
internal sealed record TensorSignature(ScalarType DType, IReadOnlyList<long> Shape)
{
    public static TensorSignature Of(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return new TensorSignature(tensor.dtype, tensor.shape);
    }
}
