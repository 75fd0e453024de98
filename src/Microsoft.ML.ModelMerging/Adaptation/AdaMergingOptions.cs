using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>How many merging coefficients AdaMerging learns.</summary>
public enum AdaMergingGranularity
{
    /// <summary>One λ_i per task, shared by every tensor: θ = θ0 + Σ_i λ_i·τ_i.</summary>
    TaskWise,

    /// <summary>One λ_{i,k} per task and per merged tensor k: θ_k = θ0_k + Σ_i λ_{i,k}·τ_{i,k}.</summary>
    LayerWise,
}

/// <summary>Settings of <see cref="AdaMerging"/> (Yang et al., ICLR 2024). Adaptation settings: <see cref="TestTimeAdaptationOptions.ForAdaMerging"/>.</summary>
internal sealed record AdaMergingOptions
{
    /// <summary>Checkpoint metadata key under which <see cref="ToJson"/> is stored.</summary>
    public const string MetadataKey = "mlmerge.adamerging_options";

    public const double DefaultInitialLambda = 0.3;

    /// <summary>Task-wise or layer-wise (default) coefficients.</summary>
    public AdaMergingGranularity Granularity { get; init; } = AdaMergingGranularity.LayerWise;

    /// <summary>Every coefficient's starting value; with the default 0.3 the model starts as task arithmetic with λ = 0.3.</summary>
    public double InitialLambda { get; init; } = DefaultInitialLambda;

    /// <summary>
    /// Merge with every coefficient clamped to [0, 1] (default), as AdaMerging's code does: a task vector is never
    /// subtracted nor added more than once, and a coefficient past a bound stops receiving gradient there. Adam trains the
    /// raw values either way.
    /// </summary>
    public bool ClampCoefficients { get; init; } = true;

    public void Validate()
    {
        var errors = new List<string>();
        if (!Enum.IsDefined(Granularity))
        {
            errors.Add($"Granularity {(int)Granularity} is not a known granularity");
        }

        if (!double.IsFinite(InitialLambda))
        {
            errors.Add($"InitialLambda must be finite (got {InitialLambda.ToString(CultureInfo.InvariantCulture)})");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid AdaMerging options: " + string.Join("; ", errors) + ".");
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Compact snake_case JSON (<c>granularity: "layer_wise"</c>, <c>initial_lambda</c>, <c>clamp_coefficients</c>).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);
}
