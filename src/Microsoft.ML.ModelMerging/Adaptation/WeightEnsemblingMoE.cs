using System.Globalization;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// Weight-Ensembling Mixture of Experts (Tang et al., ICML 2024) over a CLIP-style Vision Transformer, and its
/// efficient variant E-WEMoE. Every tensor except the block MLPs is merged by task arithmetic, θ0 + λ·Σ τ_i; the MLP of
/// every block computes its weights per input sample,
/// <c>W(x) = W0 + Σ_i r_i(x)·τ_i</c> for fc1 and fc2 weights and biases, with W0 the pre-trained MLP, τ_i = θ_i − θ0
/// and r(x) the router's output on the MLP input tokens averaged over the tokens (no softmax, as in the paper, unless
/// <see cref="WeightEnsemblingOptions.SoftmaxRouting"/>). The routers are the only trainable tensors
/// (<see cref="RouterParameters"/>); they start with output λ, i.e. as task arithmetic (with softmax routing, at the
/// experts' mean).
/// </summary>
/// <remarks>
/// Routing is per sample at training and at inference, computed batched: one matrix product r [B,E] × τ [E,P] per
/// block gives the B merged MLPs (P = all fc1/fc2 entries), applied with batched matrix products. With
/// <see cref="WeightEnsemblingOptions.BatchReduce"/>, or a depth-0 router (which ignores its input), one merged MLP
/// serves the batch.
/// </remarks>
internal sealed class WeightEnsemblingMoE : IAdaptableModel, IRoutedModel, IDisposable
{
    /// <summary>Checkpoint metadata key holding the number of experts.</summary>
    public const string ExpertCountMetadataKey = "mlmerge.wemoe_experts";

    /// <summary>Prefix of every router tensor name.</summary>
    public const string RouterPrefix = "router.";

    private readonly Dictionary<string, Tensor> _mergedWeights;
    private readonly BlockExperts[] _blocks;
    private readonly WeightEnsemblingRouter[] _routers;
    private readonly WeightEnsemblingRouter[] _routerPerBlock;
    private readonly Dictionary<string, Parameter> _routerParameters;
    private readonly Dictionary<string, string> _metadata;
    private readonly ForwardHooks _hooks;
    private List<Tensor>? _routingSink;
    private bool _disposed;

    private WeightEnsemblingMoE(
        VisionTransformerConfig config,
        WeightEnsemblingOptions options,
        int expertCount,
        Dictionary<string, Tensor> mergedWeights,
        BlockExperts[] blocks,
        WeightEnsemblingRouter[] routers,
        WeightEnsemblingRouter[] routerPerBlock)
    {
        Config = config;
        Options = options;
        ExpertCount = expertCount;
        _mergedWeights = mergedWeights;
        _blocks = blocks;
        _routers = routers;
        _routerPerBlock = routerPerBlock;
        _routerParameters = routers.SelectMany(r => r.Parameters).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        _metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [WeightEnsemblingOptions.MetadataKey] = options.ToJson(),
            [ExpertCountMetadataKey] = expertCount.ToString(CultureInfo.InvariantCulture),
            [VisionTransformerConfig.MetadataKey] = config.ToJson(),
        };
        _hooks = new ForwardHooks { MlpOverride = Mlp };
    }

    public VisionTransformerConfig Config { get; }

    public WeightEnsemblingOptions Options { get; }

    public int ExpertCount { get; }

    /// <summary>
    /// The frozen task-arithmetic tensors of everything but the block MLPs (fc1/fc2 are absent: the MoE computes them).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> MergedWeights => ThrowIfDisposed(_mergedWeights);

    /// <summary>
    /// The router parameters, the only trainable tensors: <c>router.layers.N.*</c> per block, or <c>router.shared.*</c>
    /// with <see cref="WeightEnsemblingOptions.ShareRouter"/>; see <see cref="WeightEnsemblingOptions.RouterDepth"/> for the
    /// names after the prefix.
    /// </summary>
    public IReadOnlyDictionary<string, Parameter> RouterParameters => ThrowIfDisposed(_routerParameters);

    IReadOnlyDictionary<string, Parameter> IAdaptableModel.AdaptedParameters => RouterParameters;

    /// <summary>With softmax routing each block's weights are a distribution over the experts; raw weights are not.</summary>
    public bool RoutesByDistribution => Options.SoftmaxRouting;

    /// <summary>The options, expert count and config, as stored with saved routers and adaptation checkpoints.</summary>
    public IReadOnlyDictionary<string, string> Metadata => ThrowIfDisposed(_metadata);

    /// <summary>
    /// Builds the upscaled model. Tensors are converted to float32 on the device of <paramref name="pretrained"/>; the
    /// inputs are not kept, so the caller may dispose them afterwards.
    /// </summary>
    /// <param name="config">Architecture of the pre-trained model and the experts.</param>
    /// <param name="pretrained">θ0 by Hugging Face CLIP name; other tensors (e.g. a head) are ignored.</param>
    /// <param name="experts">θ_i per expert (at least one), each with every tensor of the architecture.</param>
    /// <param name="options">Defaults: λ 0.3, depth-2 routers per block, dense task vectors, per-sample routing.</param>
    /// <exception cref="MergeInputException">A tensor is missing or has another shape or dtype than in θ0.</exception>
    public static WeightEnsemblingMoE Create(
        VisionTransformerConfig config,
        IReadOnlyDictionary<string, Tensor> pretrained,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        WeightEnsemblingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        options ??= new WeightEnsemblingOptions();
        options.Validate();
        config.Validate();
        var shapes = VisionTransformerNames.Shapes(config);
        var baseModel = ExpertModels.ArchitectureTensors(config, pretrained);
        ExpertModels.CheckExperts(baseModel, experts);
        Device device = baseModel.Values.First().device;
        int expertCount = experts.Count;

        var mlpNames = new HashSet<string>(StringComparer.Ordinal);
        for (int block = 0; block < config.Layers; block++)
        {
            mlpNames.UnionWith(BlockExperts.TensorNames(block));
        }

        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var blocks = new List<BlockExperts>();
        var routers = new List<WeightEnsemblingRouter>();
        try
        {
            using (no_grad())
            {
                foreach (var (name, _) in shapes.Where(s => !mlpNames.Contains(s.Name)))
                {
                    using var scope = NewDisposeScope();
                    Tensor theta0 = ExpertModels.Float32(pretrained[name], device);
                    Tensor sum = stack(experts.Select(e => ExpertModels.Float32(e[name], device) - theta0), 0).sum(dim: 0);
                    merged[name] = theta0.Plus(sum.Times(options.Lambda)).MoveToOuterDisposeScope();
                }

                for (int block = 0; block < config.Layers; block++)
                {
                    blocks.Add(BlockExperts.Create(config, block, pretrained, experts, options.TaskVectorKeep, device));
                }
            }

            using var generator = new Generator(unchecked((ulong)options.Seed));
            WeightEnsemblingRouter NewRouter(string prefix) => WeightEnsemblingRouter.Create(prefix, config.Width, expertCount, options, generator, device);
            WeightEnsemblingRouter[] perBlock;
            if (options.ShareRouter)
            {
                routers.Add(NewRouter(RouterPrefix + "shared."));
                perBlock = [.. Enumerable.Repeat(routers[0], config.Layers)];
            }
            else
            {
                for (int block = 0; block < config.Layers; block++)
                {
                    routers.Add(NewRouter(RouterPrefix + $"layers.{block}."));
                }

                perBlock = [.. routers];
            }

            return new WeightEnsemblingMoE(config, options, expertCount, merged, [.. blocks], [.. routers], perBlock);
        }
        catch
        {
            foreach (var tensor in merged.Values)
            {
                tensor.Dispose();
            }

            blocks.ForEach(b => b.Dispose());
            routers.ForEach(r => r.Dispose());
            throw;
        }
    }

    /// <summary>Features [B, FeatureDim] of pixels in [0,1], each sample through its own merged MLPs.</summary>
    public Tensor Forward(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return VisionTransformer.Forward(Config, _mergedWeights, images, _hooks);
    }

    /// <summary>
    /// Features like <see cref="Forward"/>, plus the routing weights every block used, [Layers, B, E] (every sample's row
    /// repeated when one merged MLP served the batch).
    /// </summary>
    public (Tensor Features, Tensor Routing) ForwardWithRouting(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var sink = new List<Tensor>();
        _routingSink = sink;
        try
        {
            Tensor features = Forward(images);
            return (features, stack(sink, 0));
        }
        finally
        {
            _routingSink = null;
        }
    }

    /// <summary>The forward hooks that plug the MoE MLPs into <see cref="VisionTransformer.Forward(VisionTransformerConfig, IReadOnlyDictionary{string, Tensor}, Tensor, ForwardHooks?)"/>.</summary>
    public ForwardHooks Hooks => ThrowIfDisposed(_hooks);

    /// <summary>θ0 of one MLP tensor of a block (e.g. <c>vision_model.encoder.layers.0.mlp.fc1.weight</c>), a view.</summary>
    public Tensor PretrainedMlpTensor(string name) => Block(name).Pretrained(name);

    /// <summary>The experts' (possibly pruned) task vectors of one MLP tensor stacked, [E, ...shape], a view.</summary>
    public Tensor MlpTaskVectors(string name) => Block(name).TaskVectors(name);

    private BlockExperts Block(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _blocks.FirstOrDefault(b => b.Contains(name))
            ?? throw new KeyNotFoundException($"'{name}' is not a block MLP tensor of this model.");
    }

    /// <summary>The MLP of <paramref name="block"/> with per-sample merged weights; x is [B,T,W].</summary>
    private Tensor Mlp(int block, Tensor x)
    {
        long batch = x.shape[0];
        Tensor routing = _routerPerBlock[block].Forward(x);            // [B,E], or [1,E] for a depth-0 router
        if (Options.BatchReduce && routing.shape[0] > 1)
        {
            routing = routing.mean([0], keepdim: true);
        }

        _routingSink?.Add(routing.expand(batch, ExpertCount));
        var experts = _blocks[block];
        Tensor merged = routing.matmul(experts.Stacked).Plus(experts.Flat);  // [R,P]: W0 + Σ_i r_i·τ_i per routed sample
        var (fc1Weight, fc1Bias, fc2Weight, fc2Bias) = experts.Split(merged);
        if (merged.shape[0] == 1)
        {
            Tensor shared = linear(x, fc1Weight[0], fc1Bias[0]);
            return linear(Config.Activation.Apply(shared), fc2Weight[0], fc2Bias[0]);
        }

        Tensor hidden = x.bmm(fc1Weight.transpose(1, 2)).Plus(fc1Bias.unsqueeze(1));                       // [B,T,M]
        return Config.Activation.Apply(hidden).bmm(fc2Weight.transpose(1, 2)).Plus(fc2Bias.unsqueeze(1));  // [B,T,W]
    }

    /// <summary>
    /// Writes the router tensors and the options (<see cref="WeightEnsemblingOptions.MetadataKey"/>), expert count and
    /// config to a .safetensors file, atomically.
    /// </summary>
    public void SaveRouters(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var all = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (key, value) in _metadata)
        {
            all[key] = value;
        }

        using var scope = NewDisposeScope();
        var tensors = _routerParameters.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal);
        SafeTensorsWriter.Save(path, tensors, all);
    }

    /// <summary>
    /// Copies saved routers (from <see cref="SaveRouters"/> or an adaptation checkpoint) into this model. The file's
    /// options must be compatible (<see cref="WeightEnsemblingOptions.IsCompatibleWith"/>) and its router tensors must
    /// be exactly this model's; tensors outside <c>router.</c> (e.g. optimizer state) are ignored.
    /// </summary>
    /// <exception cref="InvalidDataException">The file was saved for a differently built model.</exception>
    public void LoadRouters(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var checkpoint = Checkpoint.Open(path);
        if (checkpoint.Metadata.TryGetValue(WeightEnsemblingOptions.MetadataKey, out string? json))
        {
            var savedOptions = WeightEnsemblingOptions.FromJson(json);
            if (!Options.IsCompatibleWith(savedOptions))
            {
                throw new InvalidDataException(
                    $"{checkpoint.Source}: routers were trained for options {savedOptions.ToJson()}, this model has {Options.ToJson()}.");
            }
        }

        if (checkpoint.Metadata.TryGetValue(ExpertCountMetadataKey, out string? count) && count != ExpertCount.ToString(CultureInfo.InvariantCulture))
        {
            throw new InvalidDataException($"{checkpoint.Source}: routers were trained for {count} experts, this model has {ExpertCount}.");
        }

        var saved = checkpoint.Tensors.Where(t => t.Name.StartsWith(RouterPrefix, StringComparison.Ordinal)).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var unexpected = saved.Except(_routerParameters.Keys).Order(StringComparer.Ordinal).ToList();
        var missing = _routerParameters.Keys.Except(saved).Order(StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0 || missing.Count > 0)
        {
            throw new InvalidDataException(
                $"{checkpoint.Source}: router tensors do not match this model (missing: [{string.Join(", ", missing)}], unexpected: [{string.Join(", ", unexpected)}]).");
        }

        using var scope = NewDisposeScope();
        var values = _routerParameters.Keys.ToDictionary(name => name, name => checkpoint.ReadTensor(name), StringComparer.Ordinal);
        foreach (var (name, value) in values)
        {
            if (!value.shape.SequenceEqual(_routerParameters[name].shape))
            {
                throw new InvalidDataException(
                    $"{checkpoint.Source}: '{name}' has shape {NamedTensorShape.Format(value.shape)}, expected {NamedTensorShape.Format(_routerParameters[name].shape)}.");
            }
        }

        using (no_grad())
        {
            foreach (var (name, value) in values)
            {
                _routerParameters[name].copy_(value);
            }
        }
    }

    /// <summary>The options saved with routers, to build a matching model before <see cref="LoadRouters"/>.</summary>
    /// <exception cref="InvalidDataException">The file holds no options.</exception>
    public static WeightEnsemblingOptions ReadOptions(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        return checkpoint.Metadata.TryGetValue(WeightEnsemblingOptions.MetadataKey, out string? json)
            ? WeightEnsemblingOptions.FromJson(json)
            : throw new InvalidDataException($"{checkpoint.Source}: no '{WeightEnsemblingOptions.MetadataKey}' metadata; not a WEMoE router file.");
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
        foreach (var tensor in _mergedWeights.Values)
        {
            tensor.Dispose();
        }

        foreach (var block in _blocks)
        {
            block.Dispose();
        }

        foreach (var router in _routers)
        {
            router.Dispose();
        }
    }

    /// <summary>
    /// One block's MLP experts packed flat: fc1.weight [M,W], fc1.bias [M], fc2.weight [W,M], fc2.bias [W] concatenated
    /// into θ0 [P] and τ [E,P], so merging all four tensors for a batch is one matrix product.
    /// </summary>
    private sealed class BlockExperts : IDisposable
    {
        private readonly string[] _names;
        private readonly long[][] _shapes;
        private readonly long[] _offsets;
        private readonly long[] _sizes;

        private BlockExperts(string[] names, long[][] shapes, Tensor flat, Tensor stacked)
        {
            _names = names;
            _shapes = shapes;
            _sizes = [.. shapes.Select(s => s.Aggregate(1L, (a, b) => a * b))];
            _offsets = new long[names.Length];
            for (int i = 1; i < names.Length; i++)
            {
                _offsets[i] = _offsets[i - 1] + _sizes[i - 1];
            }

            Flat = flat;
            Stacked = stacked;
        }

        /// <summary>θ0 of the four tensors, flat [P].</summary>
        public Tensor Flat { get; }

        /// <summary>τ_i of the four tensors, [E,P].</summary>
        public Tensor Stacked { get; }

        public static string[] TensorNames(int block)
        {
            var names = VisionTransformerNames.Layer(block);
            return
            [
                VisionTransformerNames.Weight(names.Fc1), VisionTransformerNames.Bias(names.Fc1),
                VisionTransformerNames.Weight(names.Fc2), VisionTransformerNames.Bias(names.Fc2),
            ];
        }

        public static BlockExperts Create(VisionTransformerConfig config, int block, IReadOnlyDictionary<string, Tensor> pretrained,
            IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts, double? keep, Device device)
        {
            using var scope = NewDisposeScope();
            string[] names = TensorNames(block);
            long[][] shapes = [[config.MlpSize, config.Width], [config.MlpSize], [config.Width, config.MlpSize], [config.Width]];
            var theta0 = names.Select(n => ExpertModels.Float32(pretrained[n], device)).ToArray();
            Tensor flat = cat(theta0.Select(t => t.flatten()).ToArray(), 0);
            Tensor stacked = stack(experts.Select(expert => cat(names.Select((n, i) =>
            {
                Tensor tau = ExpertModels.Float32(expert[n], device) - theta0[i];
                return (keep is double k ? MagnitudePruning.Prune(tau, k) : tau).flatten();
            }).ToArray(), 0)), 0);
            return new BlockExperts(names, shapes, flat.MoveToOuterDisposeScope(), stacked.MoveToOuterDisposeScope());
        }

        public bool Contains(string name) => Array.IndexOf(_names, name) >= 0;

        public Tensor Pretrained(string name)
        {
            int i = Array.IndexOf(_names, name);
            return Flat.narrow(0, _offsets[i], _sizes[i]).view(_shapes[i]);
        }

        public Tensor TaskVectors(string name)
        {
            int i = Array.IndexOf(_names, name);
            return Stacked.narrow(1, _offsets[i], _sizes[i]).view([Stacked.shape[0], .. _shapes[i]]);
        }

        /// <summary>Views of merged rows [R,P] as fc1.weight [R,M,W], fc1.bias [R,M], fc2.weight [R,W,M], fc2.bias [R,W].</summary>
        public (Tensor Fc1Weight, Tensor Fc1Bias, Tensor Fc2Weight, Tensor Fc2Bias) Split(Tensor merged)
        {
            long rows = merged.shape[0];
            Tensor Part(int i) => merged.narrow(1, _offsets[i], _sizes[i]).view([rows, .. _shapes[i]]);
            return (Part(0), Part(1), Part(2), Part(3));
        }

        public void Dispose()
        {
            Flat.Dispose();
            Stacked.Dispose();
        }
    }
}
