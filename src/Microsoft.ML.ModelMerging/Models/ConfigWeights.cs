using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// The tensors of one model read by name, each checked against the shape its config implies: the one place a missing or
/// misshapen weight is found (the forward, the ONNX emitter, Fisher/RegMean and the adaptable models all read through it).
/// </summary>
internal sealed class ConfigWeights
{
    private readonly IReadOnlyDictionary<string, Tensor> _weights;
    private readonly Dictionary<string, long[]> _expected;
    private readonly string _owner;
    private readonly Func<string, string, Exception>? _error;

    /// <param name="config">The config the shapes come from.</param>
    /// <param name="weights">The tensors by Hugging Face name; read, not owned.</param>
    /// <param name="owner">Whose weights, for messages (e.g. <c>the pre-trained model</c>); null = "Vision Transformer weight".</param>
    /// <param name="error">
    /// Makes the exception of a failed lookup from the message and the tensor name (e.g. a merge input error); null = a
    /// <see cref="KeyNotFoundException"/> for a missing weight and an <see cref="ArgumentException"/> for a wrong shape.
    /// </param>
    public ConfigWeights(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, string? owner = null,
        Func<string, string, Exception>? error = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        _weights = weights;
        _expected = VisionTransformerNames.Shapes(config).ToDictionary(s => s.Name, s => s.Shape, StringComparer.Ordinal);
        _owner = owner ?? "Vision Transformer weight";
        _error = error;
    }

    /// <summary>The expected shape of <paramref name="name"/>, or null when it is not a weight of the config.</summary>
    public long[]? ExpectedShape(string name) => _expected.GetValueOrDefault(name);

    /// <summary>The tensor <paramref name="name"/>, present and of the config's shape.</summary>
    /// <exception cref="ArgumentException">The name is not a weight of this config.</exception>
    public Tensor Get(string name)
    {
        if (!_expected.TryGetValue(name, out long[]? expected))
        {
            throw new ArgumentException($"'{name}' is not a weight of this Vision Transformer config.", nameof(name));
        }

        if (!_weights.TryGetValue(name, out Tensor? tensor) || tensor is null)
        {
            string missing = _owner == "Vision Transformer weight"
                ? $"Vision Transformer weight '{name}' is missing (expected shape {NamedTensorShape.Format(expected)})."
                : $"{char.ToUpperInvariant(_owner[0])}{_owner[1..]} lacks '{name}' (expected shape {NamedTensorShape.Format(expected)}).";
            throw _error?.Invoke(missing, name) ?? new KeyNotFoundException(missing);
        }

        if (!tensor.shape.AsSpan().SequenceEqual(expected))
        {
            string shape = _owner == "Vision Transformer weight"
                ? $"Vision Transformer weight '{name}' has shape {NamedTensorShape.Format(tensor.shape)}; the config expects {NamedTensorShape.Format(expected)}."
                : $"'{name}' of {_owner} has shape {NamedTensorShape.Format(tensor.shape)}; the config expects {NamedTensorShape.Format(expected)}.";
            throw _error?.Invoke(shape, name) ?? new ArgumentException(shape);
        }

        return tensor;
    }

    /// <summary>Every weight of the config, checked, in forward order.</summary>
    public Dictionary<string, Tensor> All() => _expected.Keys.ToDictionary(name => name, Get, StringComparer.Ordinal);
}
