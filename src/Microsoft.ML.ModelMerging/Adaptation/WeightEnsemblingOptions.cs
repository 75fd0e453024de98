using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// How <see cref="WeightEnsemblingMoE"/> upscales a model: the task-arithmetic λ used for everything but the MLPs and as
/// the routers' initial output, the router architecture, and the E-WEMoE variants (pruned task vectors, one shared
/// router). Test-time adaptation settings are separate (<see cref="TestTimeAdaptationOptions.ForWeightEnsembling"/>).
/// </summary>
internal sealed record WeightEnsemblingOptions
{
    /// <summary>Checkpoint metadata key under which <see cref="ToJson"/> is stored with saved routers.</summary>
    public const string MetadataKey = "mlmerge.wemoe_options";

    public const double DefaultLambda = 0.3;
    public const int DefaultRouterDepth = 2;
    public const double DefaultRouterInitStd = 0.01;

    /// <summary>Fraction of each MLP task-vector tensor E-WEMoE keeps (<see cref="Efficient"/>).</summary>
    public const double DefaultEfficientKeep = 0.1;

    /// <summary>
    /// λ: the non-MLP tensors are θ0 + λ·Σ τ_i, and every router's last bias starts at λ so the upscaled model starts as
    /// task arithmetic.
    /// </summary>
    public double Lambda { get; init; } = DefaultLambda;

    /// <summary>
    /// Hidden layers of each router: 0 = a learnable vector r (no dependence on the input, initialised to λ);
    /// 1 = Linear(W, E); 2 = Linear(W, W) → ReLU → Linear(W, E). W is the model width, E the number of experts.
    /// </summary>
    public int RouterDepth { get; init; } = DefaultRouterDepth;

    /// <summary>Standard deviation of the normal initialisation of router weight matrices (biases: 0, last bias: λ).</summary>
    public double RouterInitStd { get; init; } = DefaultRouterInitStd;

    /// <summary>
    /// Off (default): every sample gets its own routing weights and hence its own MLP weights. On: the routing weights
    /// are averaged over the batch and one merged MLP serves the whole batch (FusionBench's <c>batch_reduce</c>), which
    /// makes a sample's output depend on the other samples of its batch.
    /// </summary>
    public bool BatchReduce { get; init; }

    /// <summary>
    /// E-WEMoE: when set, each MLP task-vector tensor (per expert, per tensor) is magnitude-pruned to this fraction of its
    /// entries with <see cref="Merging.MagnitudePruning.Prune"/>. Null (default) keeps the dense task vectors.
    /// </summary>
    public double? TaskVectorKeep { get; init; }

    /// <summary>E-WEMoE: one router shared by every block instead of one router per block.</summary>
    public bool ShareRouter { get; init; }

    /// <summary>Seed of the router initialisation.</summary>
    public long Seed { get; init; }

    /// <summary>
    /// Off (default, the paper's): the routing weights are the routers' raw outputs, any real numbers, so test-time
    /// entropy minimisation may extrapolate the task vectors (weights above 1 or below 0). On: a softmax over the experts,
    /// so every MLP is a convex combination θ0 + Σ r_i·τ_i with r_i ≥ 0 and Σ r_i = 1, starting from their mean (the last
    /// bias starts at 0, not λ); hard routing to one expert is then that expert's MLP exactly.
    /// </summary>
    public bool SoftmaxRouting { get; init; }

    /// <summary>E-WEMoE: task vectors pruned to <paramref name="keep"/> per tensor and (by default) one shared router.</summary>
    public static WeightEnsemblingOptions Efficient(double keep = DefaultEfficientKeep, bool shareRouter = true) =>
        new() { TaskVectorKeep = keep, ShareRouter = shareRouter };

    /// <summary>Throws an <see cref="ArgumentException"/> naming every invalid setting.</summary>
    public void Validate()
    {
        var errors = new List<string>();
        if (!double.IsFinite(Lambda))
        {
            errors.Add($"Lambda must be finite (got {Format(Lambda)})");
        }

        if (RouterDepth is < 0 or > 2)
        {
            errors.Add($"RouterDepth must be 0, 1 or 2 (got {RouterDepth})");
        }

        if (!(RouterInitStd >= 0) || double.IsInfinity(RouterInitStd))
        {
            errors.Add($"RouterInitStd must be a non-negative finite number (got {Format(RouterInitStd)})");
        }

        if (TaskVectorKeep is double keep && !(keep > 0 && keep <= 1))
        {
            errors.Add($"TaskVectorKeep must be in (0, 1] (got {Format(keep)})");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid weight-ensembling options: " + string.Join("; ", errors) + ".");
        }
    }

    /// <summary>
    /// True when routers trained under <paramref name="other"/> fit a model built with these options: everything but
    /// the initialisation (<see cref="Seed"/>, <see cref="RouterInitStd"/>) must agree.
    /// </summary>
    public bool IsCompatibleWith(WeightEnsemblingOptions other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return this with { Seed = 0, RouterInitStd = 0 } == other with { Seed = 0, RouterInitStd = 0 };
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Compact snake_case JSON (<c>lambda</c>, <c>router_depth</c>, ...).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads <see cref="ToJson"/> output and validates it.</summary>
    public static WeightEnsemblingOptions FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        WeightEnsemblingOptions? options;
        try
        {
            options = JsonSerializer.Deserialize<WeightEnsemblingOptions>(json, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new FormatException($"Invalid '{MetadataKey}' JSON: {e.Message}", e);
        }

        if (options is null)
        {
            throw new FormatException($"Invalid '{MetadataKey}' JSON: expected an object, got null.");
        }

        options.Validate();
        return options;
    }

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);
}
