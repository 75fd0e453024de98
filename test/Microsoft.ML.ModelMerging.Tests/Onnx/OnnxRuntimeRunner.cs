using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>Runs a model in ONNX Runtime (one thread, to share the machine) and hands the outputs back as TorchSharp tensors.</summary>
internal sealed class OnnxRuntimeRunner : IDisposable
{
    private readonly SessionOptions _options;

    public OnnxRuntimeRunner(byte[] model, GraphOptimizationLevel optimization = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        _options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = optimization };
        Session = new InferenceSession(model, _options);
    }

    public InferenceSession Session { get; }

    /// <summary>All outputs of the model for one float32 input, by output name.</summary>
    public Dictionary<string, Tensor> Run(string inputName, Tensor input)
    {
        using var scope = NewDisposeScope();
        Tensor contiguous = input.to(ScalarType.Float32).cpu().contiguous();
        float[] data = contiguous.data<float>().ToArray();
        using var value = OrtValue.CreateTensorValueFromMemory(data, contiguous.shape);
        using var runOptions = new RunOptions();
        var outputNames = Session.OutputNames.ToArray();
        using var outputs = Session.Run(runOptions, [inputName], [value], outputNames);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int i = 0; i < outputNames.Length; i++)
        {
            long[] shape = outputs[i].GetTensorTypeAndShape().Shape;
            result[outputNames[i]] = tensor(outputs[i].GetTensorDataAsSpan<float>().ToArray(), shape).MoveToOuterDisposeScope();
        }

        return result;
    }

    public void Dispose()
    {
        Session.Dispose();
        _options.Dispose();
    }
}
