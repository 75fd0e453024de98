using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>Over what a <see cref="ActivationCorrection"/> measures its statistics.</summary>
public enum CorrectionStatistics
{
    /// <summary>Per channel over every image and token, as the paper's batch-norm sites do: one scale and shift per channel.</summary>
    Channel,

    /// <summary>
    /// Per channel and token position over the images: one scale and shift per position and channel, [T,C]. The class token,
    /// which the heads read, gets its own correction instead of one dominated by the patch tokens; on ViTs it repairs much
    /// more of a non-local merge (docs/benchmarks.md).
    /// </summary>
    Token,
}

/// <summary>
/// TACT, the non-local merging paper's task-specific activation correction: at every <see cref="ActivationSite"/> of the
/// forward, each channel of a merged model is rescaled and shifted so that, on a task's images, it has the mean and variance
/// the task's expert has there: y = μ_e + σ_e·(x − μ_m)/√(σ_m² + ε), stored as y = x·scale + shift. Statistics are per
/// channel over every image and token (a batch-norm over [B,T], the paper's) or per channel and token position
/// (<see cref="CorrectionStatistics.Token"/>). One correction serves one task; it plugs into both back
/// ends as an <see cref="IVitVariant"/>, so the exported ONNX model applies the same affine maps (a Mul and an Add per site).
/// </summary>
internal sealed class ActivationCorrection : IVitVariant, IDisposable
{
    /// <summary>Metadata key of a saved correction: the task it corrects for.</summary>
    public const string TaskMetadataKey = "mlmerge.tact_task";

    /// <summary>Metadata key of a saved correction: <c>channel</c> or <c>token</c> (<see cref="CorrectionStatistics"/>).</summary>
    public const string StatisticsMetadataKey = "mlmerge.tact_statistics";

    /// <summary>Metadata key of a saved correction: ε of the variance.</summary>
    public const string EpsilonMetadataKey = "mlmerge.tact_epsilon";

    /// <summary>The ε used unless told otherwise: small against any channel variance worth keeping, large enough for a dead channel.</summary>
    public const double DefaultEpsilon = 1e-8;

    private readonly Dictionary<(ActivationSite Site, int Block), (Tensor Scale, Tensor Shift)> _affine;

    private ActivationCorrection(VisionTransformerConfig config, Dictionary<(ActivationSite, int), (Tensor, Tensor)> affine, double epsilon,
        CorrectionStatistics statistics)
    {
        Config = config;
        _affine = affine;
        Epsilon = epsilon;
        Statistics = statistics;
        Forward = new ForwardHooks { SiteTransform = (site, block, x) => Apply(site, block, x) };
        Onnx = new OnnxForwardHooks { SiteTransform = EmitSite };
    }

    public VisionTransformerConfig Config { get; }

    public double Epsilon { get; }

    public CorrectionStatistics Statistics { get; }

    /// <summary>Scales and shifts held: two per channel per site, times the token count for <see cref="CorrectionStatistics.Token"/>.</summary>
    public long ParameterCount => _affine.Values.Sum(a => a.Scale.numel() + a.Shift.numel());

    public ForwardHooks Forward { get; }

    public OnnxForwardHooks Onnx { get; }

    /// <summary>The sites this correction holds, in forward order: embeddings, then per block context, MLP input, MLP hidden, output.</summary>
    public static IReadOnlyList<(ActivationSite Site, int Block)> Sites(VisionTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var sites = new List<(ActivationSite, int)> { (ActivationSite.Embeddings, -1) };
        for (int block = 0; block < config.Layers; block++)
        {
            sites.AddRange([(ActivationSite.AttentionContext, block), (ActivationSite.MlpInput, block), (ActivationSite.MlpHidden, block), (ActivationSite.BlockOutput, block)]);
        }

        return sites;
    }

    /// <summary>The per-channel scale and shift at a site.</summary>
    public (Tensor Scale, Tensor Shift) At(ActivationSite site, int block) => _affine[(site, block)];

    /// <summary>
    /// Fits the correction of one task: statistics of the expert on <paramref name="images"/>, then of the merged model on
    /// the same images with every upstream site already corrected. The merged pass runs the whole set as one batch, so
    /// when the forward reaches a site the activations of every image are there: the site's statistics are exact and the
    /// correction is applied before the forward goes on (one forward for all sites, not one per site).
    /// </summary>
    /// <param name="config">The architecture of both models.</param>
    /// <param name="expert">The task's expert backbone.</param>
    /// <param name="merged">The merged backbone to correct.</param>
    /// <param name="images">Unlabeled images of the task, [N,C,H,W] in [0,1].</param>
    /// <param name="epsilon">ε added to the merged variance.</param>
    /// <param name="chunk">Images per forward of the expert pass (statistics accumulate over chunks).</param>
    /// <param name="cancellation">Stops the fit between chunks.</param>
    /// <param name="statistics">Statistics per channel (the paper's) or per channel and token position.</param>
    public static ActivationCorrection Fit(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> expert,
        IReadOnlyDictionary<string, Tensor> merged, Tensor images, double epsilon = DefaultEpsilon, int chunk = 256,
        CancellationToken cancellation = default, CorrectionStatistics statistics = CorrectionStatistics.Channel)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(expert);
        ArgumentNullException.ThrowIfNull(merged);
        ArgumentNullException.ThrowIfNull(images);
        if (images.shape[0] < 2)
        {
            throw new ArgumentException($"TACT needs at least 2 images of the task to measure a variance; got {images.shape[0]}.", nameof(images));
        }

        if (!(epsilon >= 0) || double.IsInfinity(epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "ε must be a finite number ≥ 0.");
        }

        var target = SiteStatistics(config, expert, images, chunk, cancellation, statistics: statistics);
        var affine = new Dictionary<(ActivationSite, int), (Tensor, Tensor)>();
        try
        {
            cancellation.ThrowIfCancellationRequested();
            using (no_grad())
            using (var scope = NewDisposeScope())
            {
                var hooks = new ForwardHooks
                {
                    SiteTransform = (site, block, x) =>
                    {
                        var (mean, variance) = Moments(x, statistics);
                        var (expertMean, expertVariance) = target[(site, block)];
                        Tensor scale = expertVariance.sqrt().div(variance.PlusScalar(epsilon).sqrt());
                        Tensor shift = expertMean.sub(mean.mul(scale));
                        affine[(site, block)] = (scale.to_type(ScalarType.Float32).cpu().MoveToOuterDisposeScope(),
                            shift.to_type(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
                        return Affine(x, affine[(site, block)].Item1, affine[(site, block)].Item2);
                    },
                };
                VisionTransformer.Forward(config, merged, images, hooks);
            }

            return new ActivationCorrection(config, affine, epsilon, statistics);
        }
        catch
        {
            DisposeAll(affine.Values);
            throw;
        }
        finally
        {
            DisposeAll(target.Values);
        }
    }

    /// <summary>
    /// Per-channel mean and (biased) variance of a model's activations at every site on <paramref name="images"/>, float64 on
    /// the CPU, accumulated over chunks; <paramref name="hooks"/> lets the model be a variant (e.g. a corrected one).
    /// </summary>
    public static Dictionary<(ActivationSite Site, int Block), (Tensor Mean, Tensor Variance)> SiteStatistics(VisionTransformerConfig config,
        IReadOnlyDictionary<string, Tensor> weights, Tensor images, int chunk = 256, CancellationToken cancellation = default, ForwardHooks? hooks = null,
        CorrectionStatistics statistics = CorrectionStatistics.Channel)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        // Sums of x and x² per channel in float64, so chunks add up exactly enough for any set size.
        var sums = new Dictionary<(ActivationSite, int), (Tensor Sum, Tensor SumOfSquares, long Count)>();
        try
        {
            using (no_grad())
            {
                for (long start = 0; start < images.shape[0]; start += chunk)
                {
                    cancellation.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    long length = Math.Min(chunk, images.shape[0] - start);
                    var observe = new ForwardHooks
                    {
                        SiteTransform = (site, block, input) =>
                        {
                            // The statistics of what the forward continues with: the variant's value at the site.
                            Tensor x = hooks?.SiteTransform is { } transform ? transform(site, block, input) : input;
                            Tensor flat = Observations(x, statistics).to_type(ScalarType.Float64);
                            Tensor sum = flat.sum(0L).cpu(), squares = flat.Squared().sum(0L).cpu();
                            if (sums.TryGetValue((site, block), out var seen))
                            {
                                sum = seen.Sum.Plus(sum);
                                squares = seen.SumOfSquares.Plus(squares);
                                seen.Sum.Dispose();
                                seen.SumOfSquares.Dispose();
                            }

                            sums[(site, block)] = (sum.MoveToOuterDisposeScope(), squares.MoveToOuterDisposeScope(), (seen.Count) + flat.shape[0]);
                            return x;
                        },
                        MlpOverride = hooks?.MlpOverride,
                        LinearAdapter = hooks?.LinearAdapter,
                    };
                    VisionTransformer.Forward(config, weights, images.narrow(0, start, length), observe);
                }
            }

            var result = new Dictionary<(ActivationSite, int), (Tensor, Tensor)>();
            foreach (var (key, (sum, squares, count)) in sums)
            {
                using var scope = NewDisposeScope();
                Tensor mean = sum.DividedBy(count);
                Tensor variance = squares.DividedBy(count).sub(mean.Squared()).AtLeast(0);
                result[key] = (Shaped(mean, key, config, statistics).MoveToOuterDisposeScope(), Shaped(variance, key, config, statistics).MoveToOuterDisposeScope());
            }

            return result;
        }
        finally
        {
            foreach (var (sum, squares, _) in sums.Values)
            {
                sum.Dispose();
                squares.Dispose();
            }
        }
    }

    /// <summary>The rows statistics are taken over: every token of every image ([B·T, C]) or every image ([B, T·C]).</summary>
    private static Tensor Observations(Tensor x, CorrectionStatistics statistics) =>
        statistics == CorrectionStatistics.Channel ? x.reshape(-1, x.shape[^1]) : x.reshape(x.shape[0], -1);

    /// <summary>A statistic of <see cref="Observations"/> in its stored shape: [C], or [T,C] per token position.</summary>
    private static Tensor Shaped(Tensor statistic, (ActivationSite Site, int Block) site, VisionTransformerConfig config, CorrectionStatistics statistics) =>
        statistics == CorrectionStatistics.Channel ? statistic : statistic.reshape(config.TokenCount, Width(config, site.Site));

    private static long Width(VisionTransformerConfig config, ActivationSite site) => site == ActivationSite.MlpHidden ? config.MlpSize : config.Width;

    /// <summary>Mean and biased variance of <paramref name="x"/> [B,T,C] in float64 on the CPU: [C], or [T,C] per position.</summary>
    private static (Tensor Mean, Tensor Variance) Moments(Tensor x, CorrectionStatistics statistics)
    {
        Tensor flat = (statistics == CorrectionStatistics.Channel ? x.reshape(-1, x.shape[^1]) : x).to_type(ScalarType.Float64).cpu();
        Tensor mean = flat.mean([0L]);
        return (mean, flat.sub(mean).Squared().mean([0L]));
    }

    private static Tensor Affine(Tensor x, Tensor scale, Tensor shift) =>
        x.mul(scale.to(x.dtype).to(x.device)).Plus(shift.to(x.dtype).to(x.device));

    private Tensor Apply(ActivationSite site, int block, Tensor x) =>
        _affine.TryGetValue((site, block), out var affine) ? Affine(x, affine.Scale, affine.Shift) : x;

    private string EmitSite(VitOnnxEmitter emitter, ActivationSite site, int block, string value)
    {
        if (!_affine.TryGetValue((site, block), out var affine)) return value;
        var g = emitter.Builder;
        string prefix = TensorPrefix(site, block);
        return g.Add(g.Mul(value, emitter.AddTensor(prefix + ".scale", affine.Scale)), emitter.AddTensor(prefix + ".shift", affine.Shift), "corrected");
    }

    /// <summary>The name prefix of a site's scale and shift, e.g. <c>tact.layers.3.mlp_hidden</c>.</summary>
    public static string TensorPrefix(ActivationSite site, int block) => site switch
    {
        ActivationSite.Embeddings => "tact.embeddings",
        ActivationSite.AttentionContext => $"tact.layers.{block}.attention_context",
        ActivationSite.MlpInput => $"tact.layers.{block}.mlp_input",
        ActivationSite.MlpHidden => $"tact.layers.{block}.mlp_hidden",
        ActivationSite.BlockOutput => $"tact.layers.{block}.output",
        _ => throw new ArgumentOutOfRangeException(nameof(site), site, null),
    };

    /// <summary>Writes the scales and shifts as safetensors (<see cref="TensorPrefix"/> names) with the task and ε.</summary>
    public void Save(string path, string task, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var ((site, block), (scale, shift)) in _affine)
        {
            string prefix = TensorPrefix(site, block);
            tensors[prefix + ".scale"] = scale;
            tensors[prefix + ".shift"] = shift;
        }

        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [TaskMetadataKey] = task,
            [EpsilonMetadataKey] = Epsilon.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            [StatisticsMetadataKey] = Statistics == CorrectionStatistics.Channel ? "channel" : "token",
            [VisionTransformerConfig.MetadataKey] = Config.ToJson(),
        };
        SafeTensorsWriter.Save(path, tensors, meta);
    }

    /// <summary>Reads a correction written by <see cref="Save"/>, checking that every site of <paramref name="config"/> is there with its width.</summary>
    /// <exception cref="InvalidDataException">A site is missing or has the wrong size.</exception>
    public static ActivationCorrection Load(string path, VisionTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(config);
        using var checkpoint = Checkpoint.Open(path);
        var statistics = checkpoint.Metadata.TryGetValue(StatisticsMetadataKey, out var recorded) ? recorded switch
        {
            "channel" => CorrectionStatistics.Channel,
            "token" => CorrectionStatistics.Token,
            _ => throw new InvalidDataException($"{path}: {StatisticsMetadataKey} is '{recorded}'; expected channel or token."),
        } : CorrectionStatistics.Channel;
        var affine = new Dictionary<(ActivationSite, int), (Tensor, Tensor)>();
        try
        {
            foreach (var (site, block) in Sites(config))
            {
                long[] expected = statistics == CorrectionStatistics.Channel ? [Width(config, site)] : [config.TokenCount, Width(config, site)];
                string prefix = TensorPrefix(site, block);
                Tensor Read(string name)
                {
                    if (!checkpoint.Tensors.Any(t => t.Name == name))
                        throw new InvalidDataException($"{path}: no tensor '{name}'; a TACT correction has a scale and a shift at every site.");
                    Tensor value = checkpoint.ReadTensor(name).to_type(ScalarType.Float32);
                    if (!value.shape.SequenceEqual(expected))
                    {
                        string shape = string.Join(", ", value.shape);
                        value.Dispose();
                        throw new InvalidDataException($"{path}: '{name}' has shape [{shape}]; expected [{string.Join(", ", expected)}] ({(statistics == CorrectionStatistics.Channel ? "per channel" : "per token and channel")}).");
                    }

                    return value;
                }

                affine[(site, block)] = (Read(prefix + ".scale"), Read(prefix + ".shift"));
            }

            double epsilon = checkpoint.Metadata.TryGetValue(EpsilonMetadataKey, out var e)
                ? double.Parse(e, System.Globalization.CultureInfo.InvariantCulture) : DefaultEpsilon;
            return new ActivationCorrection(config, affine, epsilon, statistics);
        }
        catch
        {
            DisposeAll(affine.Values);
            throw;
        }
    }

    public void Dispose()
    {
        DisposeAll(_affine.Values);
        _affine.Clear();
    }

    private static void DisposeAll(IEnumerable<(Tensor First, Tensor Second)> pairs)
    {
        foreach (var (first, second) in pairs)
        {
            first.Dispose();
            second.Dispose();
        }
    }
}
