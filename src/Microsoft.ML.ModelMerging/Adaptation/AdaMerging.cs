using System.Globalization;
using Microsoft.ML.ModelMerging.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024): task arithmetic whose coefficients are learned by test-time adaptation,
/// θ_k = θ0_k + Σ_i λ_{i,k}·τ_{i,k} over every tensor k of the Vision Transformer, with one λ per task
/// (<see cref="AdaMergingGranularity.TaskWise"/>) or one per task per tensor (<see cref="AdaMergingGranularity.LayerWise"/>),
/// each clamped to [0, 1] as in the paper's code (<see cref="AdaMergingOptions.ClampCoefficients"/>).
/// The coefficients (<see cref="Lambdas"/>) are the only trainable tensor; train them with
/// <see cref="TestTimeAdaptation.Run"/> and take the result from <see cref="MergedWeights"/>.
/// </summary>
internal sealed class AdaMerging : IAdaptableModel, IDisposable
{
    /// <summary>Checkpoint name of <see cref="Lambdas"/>.</summary>
    public const string LambdasName = "adamerging.lambdas";

    public const string ExpertCountMetadataKey = "mlmerge.adamerging_experts";

    private readonly string[] _names;
    private readonly long[][] _shapes;
    private readonly Tensor[] _pretrained;
    private readonly Tensor[] _taskVectors;
    private readonly Dictionary<string, Parameter> _adapted;
    private readonly Dictionary<string, string> _metadata;
    private bool _disposed;

    private AdaMerging(VisionTransformerConfig config, AdaMergingOptions options, string[] names, long[][] shapes,
        Tensor[] pretrained, Tensor[] taskVectors, Parameter lambdas)
    {
        Config = config;
        Options = options;
        _names = names;
        _shapes = shapes;
        _pretrained = pretrained;
        _taskVectors = taskVectors;
        Lambdas = lambdas;
        _adapted = new Dictionary<string, Parameter>(StringComparer.Ordinal) { [LambdasName] = lambdas };
        _metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [AdaMergingOptions.MetadataKey] = options.ToJson(),
            [ExpertCountMetadataKey] = ExpertCount.ToString(CultureInfo.InvariantCulture),
            [VisionTransformerConfig.MetadataKey] = config.ToJson(),
        };
    }

    public VisionTransformerConfig Config { get; }

    public AdaMergingOptions Options { get; }

    public int ExpertCount => (int)Lambdas.shape[0];

    /// <summary>The merged tensors in column order of a layer-wise <see cref="Lambdas"/>: every tensor of the architecture.</summary>
    public IReadOnlyList<string> MergedTensorNames => _names;

    /// <summary>The trained coefficients: [E] task-wise, [E, K] layer-wise with K = <see cref="MergedTensorNames"/>.Count.</summary>
    public Parameter Lambdas { get; }

    /// <summary>The coefficients the merge uses: <see cref="Lambdas"/> clamped to [0, 1] unless <see cref="AdaMergingOptions.ClampCoefficients"/> is off.</summary>
    private Tensor Coefficients => Options.ClampCoefficients ? Lambdas.Clamped(0, 1) : Lambdas;

    IReadOnlyDictionary<string, Parameter> IAdaptableModel.AdaptedParameters => ThrowIfDisposed(_adapted);

    public IReadOnlyDictionary<string, string> Metadata => ThrowIfDisposed(_metadata);

    /// <summary>
    /// Prepares θ0 and the stacked task vectors (float32, on the device of <paramref name="pretrained"/>; the inputs are
    /// not kept) and coefficients all equal to <see cref="AdaMergingOptions.InitialLambda"/>.
    /// </summary>
    /// <exception cref="Merging.MergeInputException">A tensor is missing or has another shape or dtype than in θ0.</exception>
    public static AdaMerging Create(
        VisionTransformerConfig config,
        IReadOnlyDictionary<string, Tensor> pretrained,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        AdaMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        options ??= new AdaMergingOptions();
        options.Validate();
        var baseModel = ExpertModels.ArchitectureTensors(config, pretrained);
        ExpertModels.CheckExperts(baseModel, experts);
        Device device = baseModel.Values.First().device;
        var shapes = VisionTransformerNames.Shapes(config);
        var pretrainedTensors = new List<Tensor>();
        var taskVectors = new List<Tensor>();
        try
        {
            using (no_grad())
            {
                foreach (var (name, _) in shapes)
                {
                    using var scope = NewDisposeScope();
                    Tensor theta0 = ExpertModels.Float32(baseModel[name], device).clone();
                    Tensor stacked = stack(experts.Select(e => (ExpertModels.Float32(e[name], device) - theta0).flatten()), 0);
                    pretrainedTensors.Add(theta0.MoveToOuterDisposeScope());
                    taskVectors.Add(stacked.MoveToOuterDisposeScope());
                }
            }

            long[] lambdaShape = options.Granularity == AdaMergingGranularity.TaskWise ? [experts.Count] : [experts.Count, shapes.Count];
            using var lambdaScope = NewDisposeScope();
            var lambdas = new Parameter(ScalarOperands.With(options.InitialLambda, value => full(lambdaShape, value, dtype: ScalarType.Float32, device: device)), requires_grad: true);
            lambdas.DetachFromDisposeScope();
            return new AdaMerging(config, options, [.. shapes.Select(s => s.Name)], [.. shapes.Select(s => s.Shape)],
                [.. pretrainedTensors], [.. taskVectors], lambdas);
        }
        catch
        {
            pretrainedTensors.ForEach(t => t.Dispose());
            taskVectors.ForEach(t => t.Dispose());
            throw;
        }
    }

    /// <summary>Features [B, FeatureDim] of the model merged with the current coefficients (differentiable in them).</summary>
    public Tensor Forward(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return VisionTransformer.Forward(Config, Merge(), images);
    }

    /// <summary>The coefficients the merge uses for tensor <paramref name="name"/>, one per expert [E].</summary>
    public Tensor CoefficientsOf(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int k = Array.IndexOf(_names, name);
        if (k < 0)
        {
            throw new KeyNotFoundException($"'{name}' is not a merged tensor.");
        }

        return Options.Granularity == AdaMergingGranularity.TaskWise ? Coefficients : Coefficients.select(1, k);
    }

    /// <summary>
    /// θ0 + Σ_i λ_i·τ_i with the current coefficients, every tensor of the architecture, detached float32 tensors the
    /// caller owns (save them with <see cref="ModelCheckpoints.SaveBackbone(string, VisionTransformerConfig, IReadOnlyDictionary{string, Tensor}, IReadOnlyDictionary{string, string}?)"/>).
    /// </summary>
    public Dictionary<string, Tensor> MergedWeights()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return Merge().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().MoveToOuterDisposeScope(), StringComparer.Ordinal);
    }

    /// <summary>Every tensor merged with the current coefficients: one vector-matrix product λ[E] · τ[E,n] per tensor.</summary>
    private Dictionary<string, Tensor> Merge()
    {
        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor coefficients = Coefficients;
        for (int k = 0; k < _names.Length; k++)
        {
            Tensor lambdas = Options.Granularity == AdaMergingGranularity.TaskWise ? coefficients : coefficients.select(1, k);
            merged[_names[k]] = lambdas.matmul(_taskVectors[k]).view(_shapes[k]).Plus(_pretrained[k]);
        }

        return merged;
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
        foreach (var tensor in _pretrained.Concat(_taskVectors))
        {
            tensor.Dispose();
        }

        Lambdas.Dispose();
    }
}
