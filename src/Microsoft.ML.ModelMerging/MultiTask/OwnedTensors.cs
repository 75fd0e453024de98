using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MultiTask;

/// <summary>Tensors a <see cref="MultiTaskModel"/> keeps alive for its exporters and disposes with itself.</summary>
internal sealed class OwnedTensors(IEnumerable<Tensor> tensors) : IDisposable
{
    private readonly Tensor[] _tensors = tensors.ToArray();

    public void Dispose()
    {
        foreach (Tensor tensor in _tensors)
        {
            tensor.Dispose();
        }
    }
}
