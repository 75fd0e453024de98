using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// The state of one Vision Transformer export, handed to the overridable parts of <see cref="DenseVitOnnxExporter"/>:
/// the graph builder, the config, the backbone weights (added to the graph on first use, under their Hugging Face names,
/// shape-checked) and the sub-graph emitters the dense model is made of, so a derived exporter reuses them.
/// All value names are float32 tensors with a leading symbolic batch dimension unless stated otherwise.
/// </summary>
internal sealed class VitOnnxEmitter
{
    private readonly ConfigWeights _weights;
    private readonly Dictionary<string, string> _added = new(StringComparer.Ordinal);

    internal VitOnnxEmitter(OnnxGraphBuilder builder, VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        OnnxWeightPrecision weightPrecision, OnnxForwardHooks? hooks = null)
    {
        Hooks = hooks;
        Builder = builder;
        Config = config;
        _weights = new ConfigWeights(config, weights);
        WeightPrecision = weightPrecision;
    }

    public OnnxGraphBuilder Builder { get; }

    /// <summary>The variant's ONNX hooks, called where the TorchSharp forward calls its own; null for the plain model.</summary>
    public OnnxForwardHooks? Hooks { get; }

    public VisionTransformerConfig Config { get; }

    /// <summary>Storage of weight matrices (see <see cref="VitOnnxExportOptions.WeightPrecision"/>).</summary>
    public OnnxWeightPrecision WeightPrecision { get; }

    /// <summary>The storage a tensor gets: float16 only for matrices (rank ≥ 2) when <see cref="WeightPrecision"/> asks for it.</summary>
    public OnnxWeightPrecision PrecisionFor(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return tensor.dim() >= 2 ? WeightPrecision : OnnxWeightPrecision.Float32;
    }

    /// <summary>Adds any tensor (a router, a stack of task vectors, a head) under exactly <paramref name="name"/>; returns its float32 value.</summary>
    public string AddTensor(string name, Tensor tensor) => Builder.AddInitializer(name, tensor, PrecisionFor(tensor));

    /// <summary>The float32 value of backbone weight <paramref name="name"/> (a <see cref="VisionTransformerNames"/> name), added on first use.</summary>
    /// <exception cref="KeyNotFoundException">The weight is missing.</exception>
    /// <exception cref="ArgumentException">Its shape does not match the config.</exception>
    public string Weight(string name)
    {
        if (_added.TryGetValue(name, out string? value))
        {
            return value;
        }

        Tensor tensor = _weights.Get(name);
        value = AddTensor(name, tensor);
        _added[name] = value;
        return value;
    }

    /// <summary><c>input·Wᵀ + b</c> with the backbone's <c>&lt;prefix&gt;.weight</c> [out,in] and <c>&lt;prefix&gt;.bias</c> [out], for input [..., in].</summary>
    /// <remarks>As in the forward, <see cref="OnnxForwardHooks.LinearAdapter"/> sees the input and the output of every block layer.</remarks>
    public string Linear(string input, string prefix)
    {
        string output = Linear(input, Weight(VisionTransformerNames.Weight(prefix)), Weight(VisionTransformerNames.Bias(prefix)));
        return Hooks?.LinearAdapter is { } adapter ? adapter(this, prefix, input, output) : output;
    }

    /// <summary>The value after <see cref="OnnxForwardHooks.SiteTransform"/> at <paramref name="site"/> of <paramref name="block"/> (unchanged without one).</summary>
    public string Site(ActivationSite site, int block, string value) =>
        Hooks?.SiteTransform is { } transform ? transform(this, site, block, value) : value;

    /// <summary><c>input·Wᵀ (+ b)</c> for a weight value [out,in] and an optional bias value [out]; W is transposed in the graph
    /// (ONNX Runtime folds the transpose of an initializer when the session is created).</summary>
    public string Linear(string input, string weight, string? bias)
    {
        string product = Builder.MatMul(input, Builder.Transpose(weight, [1, 0]));
        return bias is null ? product : Builder.Add(product, bias);
    }

    /// <summary>The config's MLP activation: quick_gelu as x·Sigmoid(1.702x), gelu as 0.5·x·(1 + Erf(x/√2)) (exact, opset 17).</summary>
    public string Activation(string x) => Config.Activation switch
    {
        VisionActivation.QuickGelu => Builder.Mul(x, Builder.Sigmoid(Builder.Mul(x, Builder.Scalar("quick_gelu_alpha", 1.702f))), "quick_gelu"),
        VisionActivation.Gelu => Builder.Mul(
            Builder.Mul(x, Builder.Scalar("half", 0.5f)),
            Builder.Add(Builder.Erf(Builder.Mul(x, Builder.Scalar("inv_sqrt2", (float)(1 / Math.Sqrt(2))))), Builder.Scalar("one", 1f)),
            "gelu"),
        _ => throw new InvalidOperationException($"Unknown activation {Config.Activation}."),
    };

    /// <summary>LayerNormalization over the last dimension with the backbone's <c>&lt;prefix&gt;.weight</c>/<c>.bias</c> and the config's epsilon.</summary>
    public string LayerNorm(string x, string prefix) =>
        Builder.LayerNormalization(x, Weight(VisionTransformerNames.Weight(prefix)), Weight(VisionTransformerNames.Bias(prefix)), (float)Config.LayerNormEps);

    /// <summary>
    /// The dense MLP of block <paramref name="block"/>: fc2(activation(site(fc1(input)))), [batch, tokens, width] in and
    /// out, with the <see cref="ActivationSite.MlpHidden"/> site on the pre-activation as in the forward.
    /// </summary>
    public string DenseMlp(int block, string input)
    {
        EncoderLayerNames names = VisionTransformerNames.Layer(block);
        return Linear(Activation(Site(ActivationSite.MlpHidden, block, Linear(input, names.Fc1))), names.Fc2);
    }
}
