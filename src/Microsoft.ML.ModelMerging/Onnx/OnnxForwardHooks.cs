using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// The ONNX side of <see cref="ForwardHooks"/>: the same extension points, called at the same places of the exported graph
/// as the TorchSharp forward calls its hooks, so a change to the computation (an upscaled MLP, a per-site correction, a
/// low-rank adapter) plugs into both in one <see cref="IVitVariant"/>. Values are ONNX value names.
/// </summary>
internal sealed record OnnxForwardHooks
{
    /// <summary>Replaces block <c>b</c>'s MLP: (emitter, b, MLP input after <c>layer_norm2</c> and its site) → MLP output, or null for the dense MLP.</summary>
    public Func<VitOnnxEmitter, int, string, string?>? MlpOverride { get; init; }

    /// <summary>At every <see cref="ActivationSite"/>: (emitter, site, block or -1, value) → the value to continue with.</summary>
    public Func<VitOnnxEmitter, ActivationSite, int, string, string>? SiteTransform { get; init; }

    /// <summary>After each linear layer of the blocks: (emitter, layer prefix, input, output) → the output to use.</summary>
    public Func<VitOnnxEmitter, string, string, string, string>? LinearAdapter { get; init; }
}

/// <summary>
/// A variant of the Vision Transformer's computation, described once for both back ends: the TorchSharp hooks the
/// forward runs (training, evaluation) and the ONNX hooks the exporter emits at the same places (ML.NET, ONNX Runtime).
/// A <see cref="DenseVitOnnxExporter"/> given a variant computes and exports the varied model.
/// </summary>
internal interface IVitVariant
{
    ForwardHooks Forward { get; }

    OnnxForwardHooks Onnx { get; }
}

/// <summary>A variant from its two halves.</summary>
internal sealed record VitVariant(ForwardHooks Forward, OnnxForwardHooks Onnx) : IVitVariant;
