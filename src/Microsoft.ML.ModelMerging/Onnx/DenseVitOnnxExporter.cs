using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// Exports a dense Vision Transformer (any checkpoint's weights with its config: pre-trained, fine-tuned or merged) and
/// one classification head per task as a single ONNX model (opset <see cref="Opset"/>, IR 8) that computes exactly
/// <see cref="VisionTransformer.Forward(VisionTransformerConfig, IReadOnlyDictionary{string, Tensor}, Tensor, ForwardHooks?)"/>
/// followed by each <see cref="ClassificationHead.Forward"/>.
/// <para>Graph interface:</para>
/// <list type="bullet">
/// <item>input <c>pixels</c>: float [batch, C·H·W], values in [0,1], channel-major (the layout of ML.NET's
/// <c>ExtractPixels</c> with <c>interleavePixelColors: false</c> and <c>scaleImage: 1f/255</c>); the graph reshapes it and
/// applies the config's per-channel mean/std.</item>
/// <item>one output <c>scores_&lt;task&gt;</c> per task: float [batch, classes], softmax probabilities by default or raw
/// logits (<see cref="VitOnnxExportOptions.Scores"/>).</item>
/// <item>optional output <c>features</c>: float [batch, FeatureDim], projection(post_layernorm(CLS)).</item>
/// </list>
/// The batch dimension is symbolic; the model's metadata describes tasks and classes (<see cref="VitOnnxModelInfo"/>).
/// Weights keep their Hugging Face names as initializer names. The exporter only reads the tensors; the caller keeps
/// ownership of weights and heads.
/// <para>
/// Derived exporters change the computation by overriding <see cref="EmitMlp"/> (per-block MLP) and
/// <see cref="ModelKind"/>/<see cref="AddMetadata"/>; everything else (embeddings, attention, heads, outputs, metadata)
/// stays shared.
/// </para>
/// </summary>
internal class DenseVitOnnxExporter
{
    /// <summary>The opset of the exported models: 17, the oldest with <c>LayerNormalization</c>.</summary>
    public const int Opset = OnnxOpset.Default;

    public const string InputName = "pixels";

    public const string FeaturesName = "features";

    /// <param name="config">Architecture of the backbone.</param>
    /// <param name="weights">Backbone tensors by Hugging Face name, any floating dtype and device; shapes are checked.</param>
    /// <param name="heads">At least one task; task names must be distinct and every head must take <see cref="VisionTransformerConfig.FeatureDim"/> features.</param>
    /// <param name="options">Precision, score kind, outputs and extra metadata.</param>
    /// <param name="variant">A change to the computation described for both back ends (null: the plain model).</param>
    public DenseVitOnnxExporter(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, IEnumerable<OnnxTaskHead> heads,
        VitOnnxExportOptions? options = null, IVitVariant? variant = null)
    {
        Variant = variant;
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(heads);
        config.Validate();
        Config = config;
        Weights = weights;
        Heads = heads.ToArray();
        Options = options ?? new VitOnnxExportOptions();

        var errors = new List<string>();
        if (Heads.Count == 0)
        {
            errors.Add("at least one task head is needed");
        }

        foreach (var group in Heads.GroupBy(h => h.Task, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            errors.Add($"task '{group.Key}' is given {group.Count()} times");
        }

        foreach (OnnxTaskHead head in Heads)
        {
            if (head.Head.FeatureDim != config.FeatureDim)
            {
                errors.Add($"the head of task '{head.Task}' takes {head.Head.FeatureDim} features but the backbone produces {config.FeatureDim}");
            }
        }

        foreach (string key in Options.Metadata?.Keys ?? [])
        {
            if (VitOnnxModelInfo.IsReservedKey(key))
            {
                errors.Add($"metadata key '{key}' is written by the exporter itself");
            }
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Cannot export to ONNX: " + string.Join("; ", errors) + ".");
        }
    }

    public VisionTransformerConfig Config { get; }

    public IReadOnlyList<OnnxTaskHead> Heads { get; }

    public VitOnnxExportOptions Options { get; }

    /// <summary>The variant the model computes with, in TorchSharp and in the graph; null for the plain model.</summary>
    public virtual IVitVariant? Variant { get; }

    /// <summary>The backbone tensors given to the constructor.</summary>
    public IReadOnlyDictionary<string, Tensor> Weights { get; }

    /// <summary>
    /// The backbone features of <paramref name="images"/> computed in TorchSharp by the model this exporter writes (the graph
    /// mirrors it), e.g. to evaluate the model before or without exporting it.
    /// </summary>
    public virtual Tensor Features(Tensor images) => VisionTransformer.Forward(Config, Weights, images, Variant?.Forward);

    /// <summary>Entries of every weight the exported model holds: backbone and heads (a derived exporter adds its own).</summary>
    public virtual long ParameterCount =>
        Weights.Values.Sum(t => t.numel()) + Heads.Sum(h => h.Head.Parameters.Sum(p => p.numel()));

    /// <summary>The file a dense backbone is saved under by <see cref="SaveWeights"/>.</summary>
    public const string WeightsFileName = "model.safetensors";

    /// <summary>
    /// Saves what this model needs besides the pool it came from into <paramref name="directory"/> (a dense backbone:
    /// <see cref="WeightsFileName"/> with its config) and returns the files written, relative to the directory. A derived
    /// model saves its own parts (WEMoE: routers and the merged non-MLP tensors).
    /// </summary>
    public virtual IReadOnlyList<string> SaveWeights(string directory, IReadOnlyDictionary<string, string> metadata)
    {
        if (Variant is not null)
        {
            // The backbone alone would load back as the plain model, silently without the variant.
            throw new NotSupportedException($"A {ModelKind} model with a variant ({Variant.GetType().Name}) saves itself only through an exporter that overrides SaveWeights.");
        }

        ModelCheckpoints.SaveBackbone(Path.Combine(directory, WeightsFileName), Config, Weights, metadata);
        return [WeightsFileName];
    }

    /// <summary>Written as <c>mlmerge.model_kind</c>; a derived exporter names its own kind.</summary>
    protected virtual string ModelKind => "dense_vit";

    /// <summary>Builds the whole graph in a fresh builder (nothing is cached: each call reads the tensors again).</summary>
    public OnnxGraphBuilder BuildGraph()
    {
        var builder = new OnnxGraphBuilder("vision_transformer", Opset) { DocString = Options.Description };
        var emitter = new VitOnnxEmitter(builder, Config, Weights, Options.WeightPrecision, Variant?.Onnx);

        string pixels = builder.AddInput(InputName, OnnxElementType.Float, OnnxDimension.Batch, (long)Config.Channels * Config.ImageSize * Config.ImageSize);
        string tokens;
        using (builder.Scope("embeddings"))
        {
            tokens = EmitEmbeddings(emitter, pixels);
        }

        using (builder.Scope("pre_layernorm"))
        {
            tokens = emitter.LayerNorm(tokens, VisionTransformerNames.PreLayerNorm);
        }

        for (int block = 0; block < Config.Layers; block++)
        {
            using (builder.Scope($"layers.{block}"))
            {
                tokens = EmitBlock(emitter, block, tokens);
            }
        }

        string features;
        using (builder.Scope("post_layernorm"))
        {
            features = emitter.LayerNorm(builder.Gather(tokens, index: 0, axis: 1, name: "cls"), VisionTransformerNames.PostLayerNorm);
        }

        if (Config.ProjectionDim is not null)
        {
            using (builder.Scope("visual_projection"))
            {
                features = emitter.Linear(features, emitter.Weight(VisionTransformerNames.VisualProjection), bias: null);
            }
        }

        var tasks = new List<VitOnnxTask>();
        foreach (OnnxTaskHead head in Heads)
        {
            string output = OnnxTaskHead.ScoresOutputName(head.Task);
            string scores;
            using (builder.Scope($"heads.{head.Task}"))
            {
                scores = EmitHead(emitter, head, features);
                if (Options.Scores == OnnxScoreKind.Probabilities)
                {
                    scores = builder.Softmax(scores, axis: 1);
                }
            }

            builder.AddOutput(scores, output, OnnxElementType.Float, OnnxDimension.Batch, head.Head.ClassCount);
            tasks.Add(new VitOnnxTask(head.Task, output, head.Head.Kind, head.Head.ClassNames));
        }

        if (Options.IncludeFeatures)
        {
            builder.AddOutput(features, FeaturesName, OnnxElementType.Float, OnnxDimension.Batch, Config.FeatureDim);
        }

        var info = new VitOnnxModelInfo
        {
            ModelKind = ModelKind,
            Config = Config,
            InputName = InputName,
            FeaturesName = Options.IncludeFeatures ? FeaturesName : null,
            Scores = Options.Scores,
            WeightPrecision = Options.WeightPrecision,
            Tasks = tasks,
        };
        foreach (var (key, value) in Options.Metadata ?? new Dictionary<string, string>())
        {
            builder.SetMetadata(key, value);
        }

        AddMetadata(builder);
        foreach (var (key, value) in info.ToMetadata())
        {
            builder.SetMetadata(key, value);
        }

        return builder;
    }

    /// <summary>The model as ONNX protobuf bytes.</summary>
    public byte[] Export() => BuildGraph().ToByteArray();

    /// <summary>Writes the model to <paramref name="path"/> atomically (temporary file renamed into place); returns its size in bytes.</summary>
    public long Save(string path) => BuildGraph().Save(path);

    /// <summary>
    /// Emits the MLP of block <paramref name="block"/> for <paramref name="mlpInput"/> = layer_norm2(x) [batch, tokens, width]
    /// and returns its output [batch, tokens, width], which the block adds to the residual stream. The default is the dense
    /// fc1 → activation → fc2 (<see cref="VitOnnxEmitter.DenseMlp"/>). A node-name scope <c>layers.&lt;block&gt;/mlp</c> is open.
    /// <para>
    /// This is where a WEMoE exporter plugs in per-sample merged weights (W(x) = W0 + Σ_e r_e(x)·τ_e), e.g. for fc1 with
    /// E experts, width d and MLP size m:
    /// </para>
    /// <code>
    /// r   = router(ReduceMean(mlpInput, axes [1]))               // [B,E], routing weights per sample
    /// Wx  = Reshape(MatMul(r, T), [-1, m, d])                    // T = emitter.AddTensor(..., τ stacked as [E, m·d])
    /// Wx  = Add(Wx, W0)                                          // W0 [m,d] broadcast over the batch
    /// h   = MatMul(mlpInput, Transpose(Wx, [0, 2, 1]))           // batched [B,T,d]·[B,d,m] → [B,T,m]
    /// h   = Add(h, Add(MatMul(r, Tb), b0))                       // per-sample bias [B,m], unsqueezed to [B,1,m]
    /// </code>
    /// <para>
    /// then the activation (<see cref="VitOnnxEmitter.Activation"/>) and fc2 the same way. Store T as float16
    /// (<see cref="VitOnnxEmitter.AddTensor"/> does when the options ask) to stay under the 2 GiB protobuf limit.
    /// WEMoE's own exporter (Adaptation/WeightEnsemblingOnnxExporter) is the complete implementation.
    /// </para>
    /// </summary>
    protected virtual string EmitMlp(VitOnnxEmitter emitter, int block, string mlpInput)
    {
        ArgumentNullException.ThrowIfNull(emitter);
        return emitter.DenseMlp(block, mlpInput);
    }

    /// <summary>Adds a derived exporter's own metadata entries (the exporter's keys are written after and cannot be replaced).</summary>
    protected virtual void AddMetadata(OnnxGraphBuilder builder)
    {
    }

    /// <summary>pixels [B, C·H·W] → normalised images → patch tokens, CLS in front, plus position embeddings [B, T, W].</summary>
    private string EmitEmbeddings(VitOnnxEmitter emitter, string pixels)
    {
        OnnxGraphBuilder g = emitter.Builder;
        VisionTransformerConfig c = Config;
        string images = g.Reshape(pixels, [-1, c.Channels, c.ImageSize, c.ImageSize], "images");
        string mean = g.Constant("pixel_mean", c.MeanPerChannel(), [1, c.Channels, 1, 1]);
        string std = g.Constant("pixel_std", c.StdPerChannel(), [1, c.Channels, 1, 1]);
        string normalized = g.Div(g.Sub(images, mean), std, "normalized");

        string patches = g.Conv(normalized, emitter.Weight(VisionTransformerNames.PatchEmbedding), c.PatchSize, c.PatchSize, "patches"); // [B,W,g,g]
        patches = g.Transpose(g.Reshape(patches, [0, c.Width, c.PatchCount]), [0, 2, 1]);                                              // [B,N,W]

        // The class embedding [W] broadcast to [B,1,W]: the batch size comes from the input's shape.
        string clsShape = g.Concat(0, [g.Shape(pixels, start: 0, end: 1), g.Constant("cls_shape", [1L, c.Width])]);
        string cls = g.Expand(emitter.Weight(VisionTransformerNames.ClassEmbedding), clsShape, "cls");
        string tokens = g.Concat(1, [cls, patches], "tokens");
        return emitter.Site(ActivationSite.Embeddings, -1, g.Add(tokens, emitter.Weight(VisionTransformerNames.PositionEmbedding), "embeddings"));
    }

    /// <summary>Pre-LN block: x + attn(ln1(x)), then + mlp(ln2(x)).</summary>
    private string EmitBlock(VitOnnxEmitter emitter, int block, string x)
    {
        OnnxGraphBuilder g = emitter.Builder;
        EncoderLayerNames names = VisionTransformerNames.Layer(block);
        using (g.Scope("attn"))
        {
            x = g.Add(x, EmitAttention(emitter, names, emitter.LayerNorm(x, names.LayerNorm1)), "residual");
        }

        using (g.Scope("mlp"))
        {
            string mlpInput = emitter.Site(ActivationSite.MlpInput, block, emitter.LayerNorm(x, names.LayerNorm2));
            string mlpOutput = emitter.Hooks?.MlpOverride?.Invoke(emitter, block, mlpInput) ?? EmitMlp(emitter, block, mlpInput);
            return emitter.Site(ActivationSite.BlockOutput, block, g.Add(x, mlpOutput, "residual"));
        }
    }

    /// <summary>Multi-head self-attention with scale 1/√(head size): softmax(q·kᵀ·scale)·v, heads merged, out_proj.</summary>
    private string EmitAttention(VitOnnxEmitter emitter, EncoderLayerNames names, string x)
    {
        OnnxGraphBuilder g = emitter.Builder;
        long heads = Config.Heads, headSize = Config.HeadSize;
        string SplitHeads(string t, long[] perm) => g.Transpose(g.Reshape(t, [0, 0, heads, headSize]), perm);

        string q = SplitHeads(emitter.Linear(x, names.QProj), [0, 2, 1, 3]);   // [B,H,T,D]
        string k = SplitHeads(emitter.Linear(x, names.KProj), [0, 2, 3, 1]);   // [B,H,D,T]
        string v = SplitHeads(emitter.Linear(x, names.VProj), [0, 2, 1, 3]);   // [B,H,T,D]
        string scores = g.Mul(g.MatMul(q, k), g.Scalar("attention_scale", (float)(1 / Math.Sqrt(headSize))), "scores");
        string context = g.MatMul(g.Softmax(scores, axis: -1), v);              // [B,H,T,D]
        context = emitter.Site(ActivationSite.AttentionContext, names.Index, g.Reshape(g.Transpose(context, [0, 2, 1, 3]), [0, 0, Config.Width], "context"));
        return emitter.Linear(context, names.OutProj);
    }

    /// <summary>Logits [B, classes] of one head: linear (features·Wᵀ + b) or CLIP (scale·normalize(features)·normalize(E)ᵀ).</summary>
    private static string EmitHead(VitOnnxEmitter emitter, OnnxTaskHead task, string features)
    {
        OnnxGraphBuilder g = emitter.Builder;
        ClassificationHead head = task.Head;
        string prefix = $"heads.{task.Task}.";
        using var scope = NewDisposeScope();
        string weight = emitter.AddTensor(prefix + "weight", head.Weight.detach());
        if (head.Kind == ClassificationHeadKind.Linear)
        {
            return g.Gemm(features, weight, emitter.AddTensor(prefix + "bias", head.Bias!.detach()), transB: true, name: "logits");
        }

        // torch's normalize: x / max(‖x‖₂, 1e-12) along the feature dimension.
        string Normalize(string t) => g.Div(t, g.Max(g.ReduceL2(t, [1], keepDims: true), g.Scalar("normalize_eps", 1e-12f)));
        string similarities = g.MatMul(Normalize(features), g.Transpose(Normalize(weight), [1, 0]));
        return g.Mul(similarities, emitter.AddTensor(prefix + "logit_scale", head.LogitScale!.detach()), "logits");
    }
}
