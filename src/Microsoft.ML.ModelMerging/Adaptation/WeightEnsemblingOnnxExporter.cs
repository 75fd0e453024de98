using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Onnx;
using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// Exports a <see cref="WeightEnsemblingMoE"/> (WEMoE or E-WEMoE, routers trained or not) and one classification head
/// per task as a single ONNX model that computes exactly <see cref="WeightEnsemblingMoE.Forward"/> followed by each head:
/// same graph interface, heads, outputs and metadata as <see cref="DenseVitOnnxExporter"/>, with
/// <c>mlmerge.model_kind = wemoe</c>.
/// <para>Every tensor but the block MLPs is the model's task-arithmetic merge (<see cref="WeightEnsemblingMoE.MergedWeights"/>).
/// The MLP of block N, for its input x = layer_norm2(·) [B,T,W], is</para>
/// <code>
/// r      = router(x)                                   // [B,E]: depth 0 the vector r ([1,E]); depth 1 Linear(mean_T x);
///                                                      // depth 2 Linear(mean_T ReLU(Linear(x))); BatchReduce: mean over B ([1,E])
/// θ(x)   = r·τ + θ0                                    // [B,P]: every sample's MLP parameters, computed as one
///                                                      // Gemm(r, τ_k, θ0_k) per part k of the Split of τ and θ0
/// W1ᵀ, b1, W2ᵀ, b2 = the parts reshaped to [B,W,M], [B,1,M], [B,M,W], [B,1,W]
/// y      = MatMul(act(MatMul(x, W1ᵀ) + b1), W2ᵀ) + b2   // batched over samples
/// </code>
/// <para>(ONNX Runtime folds the Split of the initializers when the session is created; splitting the parameters
/// rather than the per-sample product saves writing and reading B·P floats per block.)</para>
/// <para>
/// with the initializers <c>vision_model.encoder.layers.N.mlp.task_vectors</c> τ [E,P] (τ_i = θ_i − θ0, pruned for
/// E-WEMoE) and <c>vision_model.encoder.layers.N.mlp.pretrained</c> θ0 [P], both laid out as
/// [fc1.weightᵀ (W·M) | fc1.bias (M) | fc2.weightᵀ (M·W) | fc2.bias (W)] (weights stored transposed so the graph never
/// transposes a per-sample tensor), and the routers under their own names (<see cref="WeightEnsemblingMoE.RouterParameters"/>,
/// <c>router.shared.*</c> once for a shared router). When one set of MLP weights serves the batch (a depth-0 router or
/// <see cref="WeightEnsemblingOptions.BatchReduce"/>) the weights are 2-D and the products plain; with depth 0 ONNX
/// Runtime folds the whole merge into constants when the session is created.
/// </para>
/// <para>
/// Size: the MLP task vectors are E times the MLP, so <see cref="TaskVectorPrecision"/> float16 (a <c>Cast</c> to
/// float32 in the graph, computation stays float32) roughly halves the file; protobuf caps a model at 2 GiB.
/// </para>
/// The exporter only reads the model: keep it alive (undisposed) while exporting.
/// </summary>
internal sealed class WeightEnsemblingOnnxExporter : DenseVitOnnxExporter
{
    /// <summary>The <c>mlmerge.model_kind</c> of WEMoE and E-WEMoE models.</summary>
    public const string Kind = "wemoe";

    /// <summary>Metadata key holding <c>float32</c> or <c>float16</c>: how the MLP task vectors are stored.</summary>
    public const string TaskVectorPrecisionKey = "mlmerge.wemoe_task_vector_precision";

    /// <summary>Metadata key describing the layout of the flat MLP parameter vectors (see the class remarks).</summary>
    public const string MlpLayoutKey = "mlmerge.wemoe_mlp_layout";

    /// <summary>The value of <see cref="MlpLayoutKey"/>.</summary>
    public const string MlpLayout = "fc1.weight^T,fc1.bias,fc2.weight^T,fc2.bias";

    private readonly WeightEnsemblingMoE _model;
    private readonly ConditionalWeakTable<VitOnnxEmitter, Dictionary<string, string>> _routerValues = [];

    /// <param name="model">The upscaled model; read, not owned.</param>
    /// <param name="heads">At least one task; distinct names; each takes the backbone's features.</param>
    /// <param name="options">Score kind, outputs, extra metadata, and the storage of every other weight matrix.</param>
    /// <param name="taskVectorPrecision">Storage of the MLP task vectors; null (default) follows <see cref="VitOnnxExportOptions.WeightPrecision"/>.</param>
    public WeightEnsemblingOnnxExporter(WeightEnsemblingMoE model, IEnumerable<OnnxTaskHead> heads, VitOnnxExportOptions? options = null,
        OnnxWeightPrecision? taskVectorPrecision = null)
        : base(
            (model ?? throw new ArgumentNullException(nameof(model))).Config,
            model.MergedWeights,
            heads,
            options)
    {
        _model = model;
        TaskVectorPrecision = taskVectorPrecision ?? Options.WeightPrecision;
        var reserved = (Options.Metadata?.Keys ?? []).Where(IsOwnMetadataKey).Order(StringComparer.Ordinal).ToList();
        if (reserved.Count > 0)
        {
            throw new ArgumentException($"Cannot export to ONNX: metadata key(s) {string.Join(", ", reserved.Select(k => $"'{k}'"))} are written by the WEMoE exporter itself.");
        }

        foreach (string name in RouterTensorNames(model))
        {
            if (!model.RouterParameters.ContainsKey(name))
            {
                throw new ArgumentException($"The model has no router tensor '{name}' (its routers are {string.Join(", ", model.RouterParameters.Keys)}).", nameof(model));
            }
        }
    }

    /// <summary>The routers, with the experts' task order.</summary>
    public const string RoutersFileName = "routers.safetensors";

    /// <summary>The merged non-MLP tensors the routers were trained with (checked when the model is rebuilt from its pool).</summary>
    public const string MergedFileName = "merged.safetensors";

    /// <summary>
    /// Saves the routers (<see cref="RoutersFileName"/>, output i weighing expert i of the recorded task order) and the
    /// merged non-MLP tensors (<see cref="MergedFileName"/>); the pre-trained MLPs and the experts stay in the pool.
    /// </summary>
    public override IReadOnlyList<string> SaveWeights(string directory, IReadOnlyDictionary<string, string> metadata)
    {
        var routerMetadata = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
        // Output i of a router weighs expert i: the task order travels with the routers.
        if (Options.Metadata?.TryGetValue(WeightEnsemblingRouterFile.TasksMetadataKey, out string? tasks) == true)
        {
            routerMetadata[WeightEnsemblingRouterFile.TasksMetadataKey] = tasks;
        }

        _model.SaveRouters(Path.Combine(directory, RoutersFileName), routerMetadata);
        var merged = new Dictionary<string, string>(metadata, StringComparer.Ordinal) { [VisionTransformerConfig.MetadataKey] = Config.ToJson() };
        using (var scope = NewDisposeScope())
        {
            SafeTensorsWriter.Save(Path.Combine(directory, MergedFileName),
                _model.MergedWeights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal), merged);
        }

        return [RoutersFileName, MergedFileName];
    }

    /// <summary>The upscaled model this exporter reads (its routers, task vectors and merged tensors).</summary>
    public WeightEnsemblingMoE Model => _model;

    /// <summary>How the MLP task vectors are stored (float16: a <c>Cast</c> to float32 follows in the graph).</summary>
    public OnnxWeightPrecision TaskVectorPrecision { get; }

    protected override string ModelKind => Kind;

    /// <summary>The shared weights and heads, plus every block's MLP task vectors and the routers.</summary>
    public override long ParameterCount
    {
        get
        {
            // Accessors may hand out views; the scope frees those and leaves the model's own tensors alone.
            using var scope = NewDisposeScope();
            long count = base.ParameterCount + _model.RouterParameters.Values.Sum(p => p.numel());
            for (int block = 0; block < Config.Layers; block++)
            {
                EncoderLayerNames names = VisionTransformerNames.Layer(block);
                foreach (string name in new[] { VisionTransformerNames.Weight(names.Fc1), VisionTransformerNames.Bias(names.Fc1), VisionTransformerNames.Weight(names.Fc2), VisionTransformerNames.Bias(names.Fc2) })
                {
                    count += _model.MlpTaskVectors(name).numel();
                    if (!_model.MergedWeights.ContainsKey(name)) count += _model.PretrainedMlpTensor(name).numel();
                }
            }

            return count;
        }
    }

    /// <summary>The upscaled model's forward: per-sample routed MLPs.</summary>
    /// <summary>
    /// WEMoE as a variant of the ViT, described here once: the MoE's own forward hooks (per-sample merged MLPs in
    /// TorchSharp) and the same MLPs emitted into the graph. The base exporter runs both.
    /// </summary>
    public override IVitVariant Variant => _variant ??= new VitVariant(_model.Hooks, new OnnxForwardHooks { MlpOverride = EmitWeightEnsemblingMlp });

    private VitVariant? _variant;

    /// <summary>Whether the exporter writes <paramref name="key"/> itself (besides the keys of <see cref="VitOnnxModelInfo"/>).</summary>
    public static bool IsOwnMetadataKey(string key) =>
        key is WeightEnsemblingOptions.MetadataKey or WeightEnsemblingMoE.ExpertCountMetadataKey or TaskVectorPrecisionKey or MlpLayoutKey;

    /// <summary>The flat MLP parameters of <paramref name="block"/> in the graph's layout: θ0 [P] and τ [E,P] (new tensors).</summary>
    public static (Tensor Pretrained, Tensor TaskVectors) FlatMlp(WeightEnsemblingMoE model, int block)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(block);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(block, model.Config.Layers);
        EncoderLayerNames names = VisionTransformerNames.Layer(block);
        string fc1Weight = VisionTransformerNames.Weight(names.Fc1), fc1Bias = VisionTransformerNames.Bias(names.Fc1);
        string fc2Weight = VisionTransformerNames.Weight(names.Fc2), fc2Bias = VisionTransformerNames.Bias(names.Fc2);
        long experts = model.ExpertCount;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor pretrained = cat(
        [
            model.PretrainedMlpTensor(fc1Weight).t().reshape(-1), model.PretrainedMlpTensor(fc1Bias),
            model.PretrainedMlpTensor(fc2Weight).t().reshape(-1), model.PretrainedMlpTensor(fc2Bias),
        ], 0);
        Tensor taskVectors = cat(
        [
            model.MlpTaskVectors(fc1Weight).transpose(1, 2).reshape(experts, -1), model.MlpTaskVectors(fc1Bias),
            model.MlpTaskVectors(fc2Weight).transpose(1, 2).reshape(experts, -1), model.MlpTaskVectors(fc2Bias),
        ], 1);
        return (pretrained.MoveToOuterDisposeScope(), taskVectors.MoveToOuterDisposeScope());
    }

    protected override void AddMetadata(OnnxGraphBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.SetMetadata(WeightEnsemblingOptions.MetadataKey, _model.Options.ToJson());
        builder.SetMetadata(WeightEnsemblingMoE.ExpertCountMetadataKey, _model.ExpertCount.ToString(CultureInfo.InvariantCulture));
        builder.SetMetadata(TaskVectorPrecisionKey, TaskVectorPrecision == OnnxWeightPrecision.Float32 ? "float32" : "float16");
        builder.SetMetadata(MlpLayoutKey, MlpLayout);
    }

    private string EmitWeightEnsemblingMlp(VitOnnxEmitter emitter, int block, string mlpInput)
    {
        ArgumentNullException.ThrowIfNull(emitter);
        OnnxGraphBuilder g = emitter.Builder;
        long width = Config.Width, mlp = Config.MlpSize;
        string routing = EmitRouting(emitter, block, mlpInput);
        bool oneMlpPerBatch = _model.Options.RouterDepth == 0 || _model.Options.BatchReduce;

        string pretrained, taskVectors;
        using (var scope = NewDisposeScope())
        {
            var (theta0, tau) = FlatMlp(_model, block);
            string prefix = VisionTransformerNames.Layer(block).Prefix + ".mlp.";
            pretrained = g.AddInitializer(prefix + "pretrained", theta0, Options.WeightPrecision);
            taskVectors = g.AddInitializer(prefix + "task_vectors", tau, TaskVectorPrecision);
        }

        // The four parts of θ0 and τ are split once (constant-folded by ONNX Runtime when the session is created); each
        // part of the per-sample parameters is then one Gemm r·τ_part + θ0_part, written straight into its own tensor.
        string sizes = g.Constant("mlp_split", [width * mlp, mlp, mlp * width, width]);
        var taskVectorParts = g.Node("Split", [taskVectors, sizes], 4, [OnnxAttribute.Int("axis", 1)], "task_vector_parts");
        var pretrainedParts = g.Node("Split", [pretrained, sizes], 4, [OnnxAttribute.Int("axis", 0)], "pretrained_parts");
        var parts = Enumerable.Range(0, 4).Select(i => g.Gemm(routing, taskVectorParts[i], pretrainedParts[i], name: "merged_part")).ToArray();  // [B,P_i] or [1,P_i]
        string fc1Weight, fc1Bias, fc2Weight, fc2Bias;
        if (oneMlpPerBatch)
        {
            fc1Weight = g.Reshape(parts[0], [width, mlp], "fc1_weight_t");
            fc1Bias = g.Reshape(parts[1], [mlp], "fc1_bias");
            fc2Weight = g.Reshape(parts[2], [mlp, width], "fc2_weight_t");
            fc2Bias = g.Reshape(parts[3], [width], "fc2_bias");
        }
        else
        {
            fc1Weight = g.Reshape(parts[0], [-1, width, mlp], "fc1_weight_t");
            fc1Bias = g.Reshape(parts[1], [-1, 1, mlp], "fc1_bias");
            fc2Weight = g.Reshape(parts[2], [-1, mlp, width], "fc2_weight_t");
            fc2Bias = g.Reshape(parts[3], [-1, 1, width], "fc2_bias");
        }

        string hidden = g.Add(g.MatMul(mlpInput, fc1Weight, "fc1"), fc1Bias);                      // [B,T,M]
        return g.Add(g.MatMul(emitter.Activation(hidden), fc2Weight, "fc2"), fc2Bias);             // [B,T,W]
    }

    /// <summary>Routing weights [B,E] ([1,E] for a depth-0 router or with BatchReduce) of the MLP input [B,T,W].</summary>
    private string EmitRouting(VitOnnxEmitter emitter, int block, string x)
    {
        OnnxGraphBuilder g = emitter.Builder;
        string prefix = RouterPrefix(_model, block);
        string P(string name) => RouterValue(emitter, prefix + name);
        using (g.Scope("router"))
        {
            string routing = _model.Options.RouterDepth switch
            {
                0 => g.Reshape(P("weight"), [1, _model.ExpertCount], "routing"),
                1 => emitter.Linear(g.ReduceMean(x, [1], keepDims: false, "token_mean"), P("fc.weight"), P("fc.bias")),
                _ => emitter.Linear(
                    g.ReduceMean(g.Relu(emitter.Linear(x, P("fc1.weight"), P("fc1.bias"))), [1], keepDims: false, "token_mean"),
                    P("fc2.weight"), P("fc2.bias")),
            };
            if (_model.Options.SoftmaxRouting) routing = g.Softmax(routing, axis: 1, "routing_softmax");
            return _model.Options.BatchReduce && _model.Options.RouterDepth > 0
                ? g.ReduceMean(routing, [0], keepDims: true, "batch_mean")
                : routing;
        }
    }

    /// <summary>The float32 value of a router tensor, added to this graph on first use (a shared router is stored once).</summary>
    private string RouterValue(VitOnnxEmitter emitter, string name)
    {
        Dictionary<string, string> added = _routerValues.GetValue(emitter, _ => new Dictionary<string, string>(StringComparer.Ordinal));
        if (!added.TryGetValue(name, out string? value))
        {
            value = emitter.AddTensor(name, _model.RouterParameters[name]);
            added[name] = value;
        }

        return value;
    }

    private static string RouterPrefix(WeightEnsemblingMoE model, int block) =>
        WeightEnsemblingMoE.RouterPrefix + (model.Options.ShareRouter ? "shared." : $"layers.{block.ToString(CultureInfo.InvariantCulture)}.");

    private static IEnumerable<string> RouterTensorNames(WeightEnsemblingMoE model)
    {
        string[] suffixes = model.Options.RouterDepth switch
        {
            0 => ["weight"],
            1 => ["fc.weight", "fc.bias"],
            _ => ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
        };
        return Enumerable.Range(0, model.Config.Layers).Select(b => RouterPrefix(model, b)).Distinct(StringComparer.Ordinal)
            .SelectMany(prefix => suffixes.Select(s => prefix + s));
    }
}
