using System.Globalization;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// The per-task classifier on top of the Vision Transformer features. Heads belong to one task and are never merged;
/// they travel as tensors <c>head.weight</c>, <c>head.bias</c>, <c>head.logit_scale</c> plus string metadata.
/// </summary>
public sealed class ClassificationHead : IDisposable
{
    /// <summary>Tensor name of the weight: [classes, features] for a linear head, the class embeddings [classes, projection] for a CLIP head.</summary>
    public const string WeightName = "head.weight";
    /// <summary>Tensor name of the bias [classes] of a linear head.</summary>
    public const string BiasName = "head.bias";
    /// <summary>Tensor name of the scalar logit scale of a CLIP head.</summary>
    public const string LogitScaleName = "head.logit_scale";
    /// <summary>Metadata key of the head's kind (<c>linear</c> or <c>clip</c>).</summary>
    public const string KindMetadataKey = "mlmerge.head_kind";
    /// <summary>Metadata key of the class names, a JSON array in class-index order.</summary>
    public const string ClassNamesMetadataKey = "mlmerge.class_names";

    /// <summary>CLIP's trained temperature, exp(4.6052) ≈ 100.</summary>
    public const double DefaultClipLogitScale = 100.0;

    private bool _disposed;

    private ClassificationHead(ClassificationHeadKind kind, IReadOnlyList<string> classNames, Parameter weight, Parameter? bias, Parameter? logitScale)
    {
        Kind = kind;
        ClassNames = classNames;
        Weight = weight;
        Bias = bias;
        LogitScale = logitScale;
    }

    /// <summary>Linear probe or CLIP zero-shot head.</summary>
    public ClassificationHeadKind Kind { get; }

    /// <summary>Class names in class-index order (the order of the logits).</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Number of classes (logits).</summary>
    public int ClassCount => ClassNames.Count;

    /// <summary>Feature size the head expects.</summary>
    public int FeatureDim => (int)Weight.shape[1];

    /// <summary>[C,F]: the linear weight, or the class embeddings E of a CLIP head.</summary>
    public Parameter Weight { get; private set; }

    /// <summary>[C] for a linear head, null for a CLIP head.</summary>
    public Parameter? Bias { get; private set; }

    /// <summary>Scalar multiplier of the cosine similarities of a CLIP head (the scale itself, not its log); null for linear.</summary>
    public Parameter? LogitScale { get; private set; }

    /// <summary>The head's tensors, for an optimizer (a linear probe trains these).</summary>
    public IEnumerable<Parameter> Parameters
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            yield return Weight;
            if (Bias is not null)
            {
                yield return Bias;
            }

            if (LogitScale is not null)
            {
                yield return LogitScale;
            }
        }
    }

    /// <summary>A linear head initialised like PyTorch's <c>nn.Linear</c>: weight and bias ~ U(−1/√F, 1/√F), seeded.</summary>
    public static ClassificationHead CreateLinear(IReadOnlyList<string> classNames, int featureDim, long seed, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(featureDim);
        using var scope = NewDisposeScope();
        var generator = new Generator(unchecked((ulong)seed));
        double bound = 1.0 / Math.Sqrt(featureDim);
        Tensor Uniform(params long[] shape) => rand(shape, generator: generator).Times(2).MinusScalar(1).Times(bound);
        Tensor weight = Uniform(CheckClassNames(classNames).Count, featureDim);
        Tensor bias = Uniform(classNames.Count);
        if (device is not null)
        {
            (weight, bias) = (weight.to(device), bias.to(device));
        }

        return Linear(classNames, weight, bias);
    }

    /// <summary>A linear head holding copies of <paramref name="weight"/> [C,F] and <paramref name="bias"/> [C].</summary>
    public static ClassificationHead Linear(IReadOnlyList<string> classNames, Tensor weight, Tensor bias)
    {
        CheckWeight(classNames, weight, WeightName);
        ArgumentNullException.ThrowIfNull(bias);
        if (bias.dim() != 1 || bias.shape[0] != classNames.Count)
        {
            throw new ArgumentException($"'{BiasName}' has shape {NamedTensorShape.Format(bias.shape)}; expected [{classNames.Count}] (one per class).");
        }

        return new ClassificationHead(ClassificationHeadKind.Linear, classNames.ToArray(), Copy(weight), Copy(bias), logitScale: null);
    }

    /// <summary>A CLIP head from one embedding per class [C,F] (normalised at use) and a logit scale.</summary>
    public static ClassificationHead Clip(IReadOnlyList<string> classNames, Tensor classEmbeddings, double logitScale = DefaultClipLogitScale)
    {
        CheckWeight(classNames, classEmbeddings, WeightName);
        if (!double.IsFinite(logitScale) || logitScale <= 0)
        {
            throw new ArgumentException($"'{LogitScaleName}' must be a positive finite number (got {logitScale.ToString(CultureInfo.InvariantCulture)}).");
        }

        using var scope = NewDisposeScope();
        Tensor scale = torch.tensor(logitScale, dtype: classEmbeddings.dtype, device: classEmbeddings.device);
        return new ClassificationHead(ClassificationHeadKind.Clip, classNames.ToArray(), Copy(classEmbeddings), bias: null, Copy(scale));
    }

    /// <summary>Logits [B,C] of features [B,F].</summary>
    public Tensor Forward(Tensor features)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 2 || features.shape[1] != FeatureDim)
        {
            throw new ArgumentException($"Head features have shape {NamedTensorShape.Format(features.shape)}; expected [B, {FeatureDim}].", nameof(features));
        }

        return Kind switch
        {
            ClassificationHeadKind.Linear => nn.functional.linear(features, Weight, Bias),
            ClassificationHeadKind.Clip => LogitScale! * nn.functional.normalize(features, dim: 1).matmul(nn.functional.normalize(Weight, dim: 1).t()),
            _ => throw new InvalidOperationException($"Unknown head kind {Kind}."),
        };
    }

    /// <summary>The head's tensors by name, detached and sharing storage with the head (clone before changing).</summary>
    public Dictionary<string, Tensor> ToTensors()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal) { [WeightName] = Weight.detach() };
        if (Bias is not null)
        {
            tensors[BiasName] = Bias.detach();
        }

        if (LogitScale is not null)
        {
            tensors[LogitScaleName] = LogitScale.detach();
        }

        return tensors;
    }

    /// <summary>Checkpoint metadata: the kind (<c>linear</c>/<c>clip</c>) and the class names as a JSON array.</summary>
    public Dictionary<string, string> ToMetadata() => new(StringComparer.Ordinal)
    {
        [KindMetadataKey] = Kind == ClassificationHeadKind.Linear ? "linear" : "clip",
        [ClassNamesMetadataKey] = JsonSerializer.Serialize(ClassNames),
    };

    /// <summary>
    /// Rebuilds a head from <see cref="ToTensors"/> and <see cref="ToMetadata"/> output. Tensors not starting with
    /// <c>head.</c> are ignored (a head may share a file with a backbone); unknown <c>head.*</c> tensors are an error.
    /// </summary>
    public static ClassificationHead FromTensors(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(metadata);
        ClassificationHeadKind kind = ReadKind(metadata);
        IReadOnlyList<string> classNames = ReadClassNames(metadata);

        string[] allowed = kind == ClassificationHeadKind.Linear ? [WeightName, BiasName] : [WeightName, LogitScaleName];
        var unknown = tensors.Keys.Where(n => n.StartsWith("head.", StringComparison.Ordinal) && !allowed.Contains(n)).ToList();
        if (unknown.Count > 0)
        {
            throw new InvalidDataException($"Unexpected tensors for a {kind} head: {string.Join(", ", unknown)} (expected {string.Join(", ", allowed)}).");
        }

        Tensor Require(string name) => tensors.TryGetValue(name, out Tensor? t) && t is not null
            ? t
            : throw new InvalidDataException($"A {kind} head needs tensor '{name}', which is missing.");

        if (kind == ClassificationHeadKind.Linear)
        {
            return Linear(classNames, Require(WeightName), Require(BiasName));
        }

        Tensor scale = Require(LogitScaleName);
        if (scale.numel() != 1)
        {
            throw new InvalidDataException($"'{LogitScaleName}' must hold one value (got shape {NamedTensorShape.Format(scale.shape)}).");
        }

        return Clip(classNames, Require(WeightName), scale.to(ScalarType.Float64).item<double>());
    }

    private static ClassificationHeadKind ReadKind(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(KindMetadataKey, out string? kind))
        {
            throw new InvalidDataException($"Head metadata lacks '{KindMetadataKey}' (expected 'linear' or 'clip').");
        }

        return kind.Trim().ToLowerInvariant() switch
        {
            "linear" => ClassificationHeadKind.Linear,
            "clip" => ClassificationHeadKind.Clip,
            _ => throw new InvalidDataException($"Head metadata '{KindMetadataKey}' is '{kind}'; expected 'linear' or 'clip'."),
        };
    }

    private static IReadOnlyList<string> ReadClassNames(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(ClassNamesMetadataKey, out string? json))
        {
            throw new InvalidDataException($"Head metadata lacks '{ClassNamesMetadataKey}' (a JSON array of class names).");
        }

        try
        {
            string[]? names = JsonSerializer.Deserialize<string[]>(json);
            if (names is null || names.Any(n => n is null))
            {
                throw new InvalidDataException($"Head metadata '{ClassNamesMetadataKey}' must be a JSON array of strings (got {json}).");
            }

            return names;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Head metadata '{ClassNamesMetadataKey}' is not a JSON array of strings: {e.Message}", e);
        }
    }

    private static IReadOnlyList<string> CheckClassNames(IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        if (classNames.Count == 0)
        {
            throw new ArgumentException("A classification head needs at least one class name.", nameof(classNames));
        }

        return classNames;
    }

    private static void CheckWeight(IReadOnlyList<string> classNames, Tensor weight, string name)
    {
        CheckClassNames(classNames);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2 || weight.shape[0] != classNames.Count)
        {
            throw new ArgumentException(
                $"'{name}' has shape {NamedTensorShape.Format(weight.shape)}; expected [{classNames.Count}, F] (one row per class name).");
        }

        if (!weight.is_floating_point())
        {
            throw new ArgumentException($"'{name}' has dtype {weight.dtype}; expected floating point.");
        }
    }

    /// <summary>An independent trainable copy that outlives the caller's dispose scope.</summary>
    private static Parameter Copy(Tensor value)
    {
        var parameter = new Parameter(value.detach().clone(), requires_grad: true);
        parameter.DetachFromDisposeScope();
        return parameter;
    }

    /// <summary>Moves the head to <paramref name="device"/>; parameters are replaced, so build optimizers after moving.</summary>
    public ClassificationHead to(Device device)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        Parameter Move(Parameter p)
        {
            var moved = new Parameter(p.detach().to(device).clone(), p.requires_grad);
            moved.DetachFromDisposeScope();
            p.Dispose();
            return moved;
        }

        Weight = Move(Weight);
        Bias = Bias is null ? null : Move(Bias);
        LogitScale = LogitScale is null ? null : Move(LogitScale);
        return this;
    }

    /// <summary>Turns gradients on or off for every parameter of the head (frozen heads: off).</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (Parameter parameter in Parameters)
        {
            parameter.requires_grad = requiresGrad;
        }
    }

    /// <summary>Disposes the head's parameters.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Weight.Dispose();
        Bias?.Dispose();
        LogitScale?.Dispose();
    }
}
