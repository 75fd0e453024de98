using System.Globalization;
using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// Typed settings of one algorithm, beside the string form (<c>Method</c> + <c>name=value</c>): a property left null takes
/// the algorithm's declared default, so defaults live in one place (the registry) and a typo is a compile error.
/// </summary>
public abstract record AlgorithmSettings
{
    /// <summary>The registry name of the algorithm these settings are for.</summary>
    public abstract string Method { get; }

    /// <summary>The parameters set, by their declared names.</summary>
    protected abstract IEnumerable<(string Name, object? Value)> Given();

    /// <summary>The string form: only the parameters set.</summary>
    public MergeParameters ToParameters() => new(Given()
        .Where(p => p.Value is not null)
        .Select(p => KeyValuePair.Create(p.Name, p.Value switch
        {
            bool flag => flag ? "true" : "false",
            double number => MergeParameterSpec.FormatNumber(number),
            IFormattable value => value.ToString(null, CultureInfo.InvariantCulture),
            var value => value!.ToString()!,
        })));
}

/// <summary>Task arithmetic: θ0 + λ·Σ τ_i.</summary>
public sealed record TaskArithmeticSettings : AlgorithmSettings
{
    /// <summary>λ scaling the summed task vectors (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <inheritdoc/>
    public override string Method => "task-arithmetic";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() => [("lambda", Lambda)];
}

/// <summary>TIES: trim, elect sign, disjoint merge.</summary>
public sealed record TiesSettings : AlgorithmSettings
{
    /// <summary>λ scaling the merged task vector (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>Fraction of each task vector's largest-magnitude entries kept.</summary>
    public double? Keep { get; init; }

    /// <summary>True: threshold per tensor (mergekit); false: over the whole model (FusionBench).</summary>
    public bool? TrimPerTensor { get; init; }

    /// <summary>True: agreeing entries averaged; false: summed.</summary>
    public bool? MergeByMean { get; init; }

    /// <inheritdoc/>
    public override string Method => "ties";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() =>
    [
        ("lambda", Lambda), ("keep", Keep),
        ("trim", TrimPerTensor is { } perTensor ? perTensor ? "per-tensor" : "global" : null),
        ("merge-func", MergeByMean is { } mean ? mean ? "mean" : "sum" : null),
    ];
}

/// <summary>WEMoE, or E-WEMoE with <see cref="Efficient"/>: per-sample routed MLP experts trained by test-time adaptation.</summary>
public sealed record WeightEnsemblingSettings : AlgorithmSettings
{
    /// <summary>E-WEMoE: task vectors pruned per tensor (<see cref="Keep"/>), one router shared by every block.</summary>
    public bool Efficient { get; init; }

    /// <summary>Adaptation steps (default 1000).</summary>
    public int? Steps { get; init; }

    /// <summary>Adam's learning rate for the routers (default 1e-4).</summary>
    public double? LearningRate { get; init; }

    /// <summary>Unlabeled images per task per step (default 16).</summary>
    public int? Batch { get; init; }

    /// <summary>Task-arithmetic λ of the non-MLP tensors, also the routers' initial output (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>Router layers: 0, 1 or 2 (default 2).</summary>
    public int? RouterDepth { get; init; }

    /// <summary>Route on the batch mean of the routing weights (FusionBench's granularity) instead of per sample.</summary>
    public bool? BatchReduce { get; init; }

    /// <summary>E-WEMoE only: fraction of every MLP task-vector tensor kept (default 0.1).</summary>
    public double? Keep { get; init; }

    /// <summary>Seed of the router initialisation and of the batch order (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => Efficient ? "e-wemoe" : "wemoe";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() =>
    [
        ("steps", Steps), ("learning-rate", LearningRate), ("batch", Batch), ("lambda", Lambda),
        ("router-depth", RouterDepth), ("batch-reduce", BatchReduce), ("keep", Keep), ("seed", Seed),
    ];
}

/// <summary>AdaMerging, layer-wise (default) or task-wise.</summary>
public sealed record AdaMergingSettings : AlgorithmSettings
{
    /// <summary>One coefficient per task instead of one per task per tensor.</summary>
    public bool TaskWise { get; init; }

    /// <summary>Adaptation steps (default 1000).</summary>
    public int? Steps { get; init; }

    /// <summary>Adam's learning rate for the coefficients (default 1e-3).</summary>
    public double? LearningRate { get; init; }

    /// <summary>Unlabeled images per task per step (default 16).</summary>
    public int? Batch { get; init; }

    /// <summary>Initial coefficient of every task vector (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>Seed of the batch order (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => TaskWise ? "adamerging-task" : "adamerging-layer";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() =>
        [("steps", Steps), ("learning-rate", LearningRate), ("batch", Batch), ("lambda", Lambda), ("seed", Seed)];
}

/// <summary>TACT: a weight-only base merge corrected per task at every site to the expert's activation statistics.</summary>
public sealed record TactSettings : AlgorithmSettings
{
    /// <summary>The weight-only merge corrected (<see cref="TactAlgorithm.BaseMethods"/>); default simple average.</summary>
    public string? BaseMethod { get; init; }

    /// <summary>Unlabeled images per task the statistics are measured on (default 256).</summary>
    public int? Examples { get; init; }

    /// <summary>ε added to the merged model's variance (default 1e-8).</summary>
    public double? Epsilon { get; init; }

    /// <summary>True: statistics per channel and token position; false: per channel over every token (the paper's).</summary>
    public bool? PerToken { get; init; }

    /// <summary>The base method's λ, for a base method that has one.</summary>
    public double? Lambda { get; init; }

    /// <summary>The base method's kept fraction (TIES).</summary>
    public double? Keep { get; init; }

    /// <summary>Seed of the choice of images when a task has more than <see cref="Examples"/> (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => "tact";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() =>
    [
        ("base-method", BaseMethod), ("examples", Examples), ("epsilon", Epsilon),
        ("statistics", PerToken is { } token ? token ? "token" : "channel" : null), ("lambda", Lambda), ("keep", Keep), ("seed", Seed),
    ];
}
