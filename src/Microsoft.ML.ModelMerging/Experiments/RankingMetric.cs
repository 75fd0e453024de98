namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>What a merge experiment ranks candidates by (always measured on the validation split when choosing).</summary>
public enum RankingMetric
{
    /// <summary>Mean accuracy over tasks.</summary>
    Average,
    /// <summary>Mean over tasks of accuracy / the task's individual expert accuracy.</summary>
    Normalized,
    /// <summary>The lowest task accuracy: for users who cannot afford one task to collapse.</summary>
    Worst,
}

/// <summary>Parsing and computing <see cref="RankingMetric"/>.</summary>
public static class RankingMetrics
{
    /// <summary>Parses <c>average</c>, <c>normalized</c> (or <c>normalised</c>) or <c>worst</c>, case-insensitive; <c>avg</c>, <c>norm</c> and <c>min</c> too.</summary>
    /// <exception cref="ArgumentException">Any other text.</exception>
    public static RankingMetric Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "average" or "avg" => RankingMetric.Average,
        "normalized" or "normalised" or "norm" => RankingMetric.Normalized,
        "worst" or "min" => RankingMetric.Worst,
        _ => throw new ArgumentException($"Unknown metric '{text}': expected average, normalized or worst."),
    };

    /// <summary>The metric's value for <paramref name="accuracies"/>; <paramref name="individual"/> (each task's expert accuracy) is read by <see cref="RankingMetric.Normalized"/>.</summary>
    public static double Score(this RankingMetric metric, Pools.TaskAccuracies accuracies, IReadOnlyDictionary<string, double> individual) => metric switch
    {
        RankingMetric.Average => accuracies.Average,
        RankingMetric.Normalized => accuracies.NormalizedAverage(individual),
        RankingMetric.Worst => accuracies.Worst,
        _ => throw new ArgumentOutOfRangeException(nameof(metric)),
    };
}
