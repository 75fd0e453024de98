namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>The methods <see cref="AdaptationJob"/> runs on a zoo: test-time adaptation, or a merge that reads labeled training data.</summary>
public enum AdaptationMethod
{
    /// <summary>WEMoE: per-sample MLP mixtures with one router per block, routers trained by test-time adaptation.</summary>
    WeightEnsembling,

    /// <summary>E-WEMoE: WEMoE with MLP task vectors pruned per tensor and one router shared by every block.</summary>
    EfficientWeightEnsembling,

    /// <summary>AdaMerging with one coefficient per task.</summary>
    AdaMergingTaskWise,

    /// <summary>AdaMerging with one coefficient per task per tensor.</summary>
    AdaMergingLayerWise,

    /// <summary>Fisher merging on labeled training examples.</summary>
    Fisher,

    /// <summary>RegMean on training examples.</summary>
    RegMean,
}

/// <summary>Command-line names of <see cref="AdaptationMethod"/> and what each produces.</summary>
public static class AdaptationMethods
{
    private static readonly (AdaptationMethod Method, string Name)[] Names =
    [
        (AdaptationMethod.WeightEnsembling, "wemoe"),
        (AdaptationMethod.EfficientWeightEnsembling, "e-wemoe"),
        (AdaptationMethod.AdaMergingTaskWise, "adamerging-task"),
        (AdaptationMethod.AdaMergingLayerWise, "adamerging-layer"),
        (AdaptationMethod.Fisher, "fisher"),
        (AdaptationMethod.RegMean, "regmean"),
    ];

    /// <summary>Every method's name, in declaration order.</summary>
    public static IReadOnlyList<string> All => [.. Names.Select(n => n.Name)];

    /// <summary><c>wemoe</c>, <c>e-wemoe</c>, <c>adamerging-task</c>, <c>adamerging-layer</c>, <c>fisher</c> or <c>regmean</c>.</summary>
    public static string Name(this AdaptationMethod method) =>
        Names.FirstOrDefault(n => n.Method == method).Name ?? throw new ArgumentOutOfRangeException(nameof(method), method, "Unknown adaptation method.");

    /// <exception cref="ArgumentException">Not a method name.</exception>
    public static AdaptationMethod Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (method, text) in Names)
        {
            if (string.Equals(text, name.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                return method;
            }
        }

        throw new ArgumentException($"Unknown adaptation method '{name}': expected one of {string.Join(", ", All)}.");
    }

    /// <summary>True for the methods trained by test-time adaptation (steps, learning rate, checkpoints).</summary>
    public static bool IsTestTimeAdaptation(this AdaptationMethod method) => method is not (AdaptationMethod.Fisher or AdaptationMethod.RegMean);

    /// <summary>True for WEMoE and E-WEMoE, whose result is an upscaled model rather than one set of merged weights.</summary>
    public static bool IsWeightEnsembling(this AdaptationMethod method) =>
        method is AdaptationMethod.WeightEnsembling or AdaptationMethod.EfficientWeightEnsembling;
}
