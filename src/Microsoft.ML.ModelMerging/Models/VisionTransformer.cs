using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// A trainable CLIP-style Vision Transformer: a flat dictionary of <see cref="Parameter"/>s keyed by Hugging Face CLIP
/// vision names, run by the functional <see cref="Forward(VisionTransformerConfig, IReadOnlyDictionary{string, Tensor}, Tensor, ForwardHooks?)"/>.
/// Flat names instead of nested modules keep merging (which works name by name) and loading HF checkpoints trivial.
/// </summary>
internal sealed partial class VisionTransformer : IDisposable
{
    private const double InitStd = 0.02;

    private readonly Dictionary<string, Parameter> _parameters;
    private readonly Dictionary<string, Tensor> _weights;
    private bool _disposed;

    private VisionTransformer(VisionTransformerConfig config, Dictionary<string, Parameter> parameters)
    {
        Config = config;
        _parameters = parameters;
        _weights = parameters.ToDictionary(kv => kv.Key, kv => (Tensor)kv.Value, StringComparer.Ordinal);
    }

    public VisionTransformerConfig Config { get; }

    /// <summary>Parameters by name, in forward order.</summary>
    public IReadOnlyDictionary<string, Parameter> NamedParameters => ThrowIfDisposed(_parameters);

    /// <summary>All parameters, for an optimizer.</summary>
    public IEnumerable<Parameter> Parameters => ThrowIfDisposed(_parameters).Values;

    /// <summary>The live parameters typed for the functional forward (no copies).</summary>
    public IReadOnlyDictionary<string, Tensor> Weights => ThrowIfDisposed(_weights);

    public Device Device => ThrowIfDisposed(_parameters).Values.First().device;

    /// <summary>
    /// A freshly initialised model: weight matrices and embeddings ~ truncated normal(0, 0.02) cut at ±2σ, biases 0,
    /// LayerNorm weights 1. The same seed gives the same weights.
    /// </summary>
    public static VisionTransformer Create(VisionTransformerConfig config, long seed, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        using var scope = NewDisposeScope();
        var generator = new Generator(unchecked((ulong)seed));
        var parameters = new Dictionary<string, Parameter>(StringComparer.Ordinal);
        foreach (var (name, shape) in VisionTransformerNames.Shapes(config))
        {
            Tensor value = InitialValue(name, shape, generator);
            if (device is not null)
            {
                value = value.to(device);
            }

            parameters[name] = NewParameter(value, requiresGrad: true);
        }

        return new VisionTransformer(config, parameters);
    }

    private static Tensor InitialValue(string name, long[] shape, Generator generator)
    {
        bool isLayerNorm = name.Contains("layernorm", StringComparison.Ordinal)
            || name.Contains("layrnorm", StringComparison.Ordinal)
            || name.Contains("layer_norm", StringComparison.Ordinal);
        if (isLayerNorm)
        {
            return name.EndsWith(".weight", StringComparison.Ordinal) ? ones(shape) : zeros(shape);
        }

        if (name.EndsWith(".bias", StringComparison.Ordinal))
        {
            return zeros(shape);
        }

        return TruncatedNormal(shape, InitStd, generator);
    }

    /// <summary>
    /// Normal(0, std²) cut at ±2·std, by inverse CDF: x = √2·std·erfinv(u), u ~ U(−erf(√2), erf(√2)).
    /// Written out because TorchSharp 0.107's <c>nn.init.trunc_normal_</c> fills a constant instead of samples.
    /// </summary>
    private static Tensor TruncatedNormal(long[] shape, double std, Generator generator)
    {
        const double erfOfSqrt2 = 0.9544997361036416;  // P(|z| < 2) for a standard normal z
        Tensor u = rand(shape, dtype: ScalarType.Float64, generator: generator).Times(2).MinusScalar(1).Times(erfOfSqrt2);
        return u.erfinv().Times(Math.Sqrt(2) * std).Clamped(-2 * std, 2 * std).to(ScalarType.Float32);
    }

    /// <summary>A model holding copies of <paramref name="state"/> (see <see cref="LoadState"/> for the checks).</summary>
    public static VisionTransformer FromState(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> state, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        Device? device = state.Values.FirstOrDefault()?.device;
        var model = Create(config, seed: 0, device);
        try
        {
            model.LoadState(state, strict);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Features [B, FeatureDim] of pixels in [0,1] computed with this model's parameters.</summary>
    public Tensor Forward(Tensor images, ForwardHooks? hooks = null) => Forward(Config, Weights, images, hooks);

    /// <summary>
    /// Name → tensor of every parameter, detached from autograd. Like PyTorch's <c>state_dict</c> the tensors share
    /// storage with the parameters (no copy); clone them before changing either side.
    /// </summary>
    public Dictionary<string, Tensor> State() =>
        ThrowIfDisposed(_parameters).ToDictionary(kv => kv.Key, kv => kv.Value.detach(), StringComparer.Ordinal);

    /// <summary>
    /// Copies tensors by name into the parameters (converting dtype and device). HF's position-id buffer and a
    /// CLIPModel's text tower are skipped. With <paramref name="strict"/> any missing, unexpected or misshapen tensor
    /// throws before anything is copied; otherwise the matching tensors load and the report lists the rest.
    /// </summary>
    public StateLoadReport LoadState(IReadOnlyDictionary<string, Tensor> state, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        ThrowIfDisposed(_parameters);
        var report = StateLoadReport.Compare(Config, state.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.shape)));
        if (strict)
        {
            report.ThrowIfIncomplete("state");
        }

        foreach (string name in report.Matched)
        {
            if (!state[name].is_floating_point())
            {
                throw new InvalidDataException($"Tensor '{name}' has dtype {state[name].dtype}; Vision Transformer weights must be floating point.");
            }
        }

        using (no_grad())
        {
            foreach (string name in report.Matched)
            {
                _parameters[name].copy_(state[name]);
            }
        }

        return report;
    }

    /// <summary>
    /// Moves every parameter to <paramref name="device"/>. Parameters are replaced by new objects, so build optimizers
    /// after moving.
    /// </summary>
    public VisionTransformer to(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device current = Device;
        if (current.type == device.type && current.index == device.index)
        {
            return this;
        }

        using var scope = NewDisposeScope();
        foreach (string name in _parameters.Keys.ToList())
        {
            Parameter old = _parameters[name];
            Parameter moved = NewParameter(old.detach().to(device), old.requires_grad);
            _parameters[name] = moved;
            _weights[name] = moved;
            old.Dispose();
        }

        return this;
    }

    /// <summary>Switches gradient tracking of every parameter, e.g. off for a linear probe on frozen features.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (Parameter parameter in Parameters)
        {
            parameter.requires_grad = requiresGrad;
        }
    }

    /// <summary>Wraps a tensor as a parameter that outlives any dispose scope the caller is in.</summary>
    private static Parameter NewParameter(Tensor value, bool requiresGrad)
    {
        var parameter = new Parameter(value.detach(), requiresGrad);
        parameter.DetachFromDisposeScope();
        return parameter;
    }

    private T ThrowIfDisposed<T>(T value)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return value;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (Parameter parameter in _parameters.Values)
        {
            parameter.Dispose();
        }

        _parameters.Clear();
        _weights.Clear();
    }
}
