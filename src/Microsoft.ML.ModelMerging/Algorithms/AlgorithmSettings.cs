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
            IEnumerable<double> numbers => string.Join(",", numbers.Select(MergeParameterSpec.FormatNumber)),
            IFormattable value => value.ToString(null, CultureInfo.InvariantCulture),
            var value => value!.ToString()!,
        })));
}

/// <summary>
/// Settings of a weight-only method that gives one model: its own parameters, plus where it merges a pool of LoRA adapters.
/// </summary>
public abstract record OneModelMergeSettings : AlgorithmSettings
{
    /// <summary>
    /// LoRA adapter pools only. True: merged on the adapters' factors A and B over their shared initialisation (the L-LoRA
    /// paper's task arithmetic); false: on each layer's dense ΔW (the default).
    /// </summary>
    public bool? MergeLoraFactors { get; init; }

    /// <summary>The method's own parameters, by their declared names.</summary>
    protected abstract IEnumerable<(string Name, object? Value)> MethodParameters();

    /// <inheritdoc/>
    protected sealed override IEnumerable<(string Name, object? Value)> Given() =>
    [
        .. MethodParameters(),
        (LoraMergeSpaces.ParameterName, MergeLoraFactors is { } factors ? factors ? LoraMergeSpaces.Factors : LoraMergeSpaces.Delta : null),
    ];
}

/// <summary>Simple average: θ = mean of the experts' weights. It takes no parameters.</summary>
public sealed record SimpleAverageSettings : OneModelMergeSettings
{
    /// <inheritdoc/>
    public override string Method => "simple-average";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> MethodParameters() => [];
}

/// <summary>Task arithmetic: θ0 + λ·Σ τ_i.</summary>
public sealed record TaskArithmeticSettings : OneModelMergeSettings
{
    /// <summary>λ scaling the summed task vectors (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <inheritdoc/>
    public override string Method => "task-arithmetic";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> MethodParameters() => [("lambda", Lambda)];
}

/// <summary>TIES: trim, elect sign, disjoint merge.</summary>
public sealed record TiesSettings : OneModelMergeSettings
{
    /// <summary>λ scaling the merged task vector (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>Fraction of each task vector's largest-magnitude entries kept by the trim, in (0, 1] (default 0.2).</summary>
    public double? Keep { get; init; }

    /// <summary>True: threshold per tensor (mergekit); false: over the whole model (FusionBench, the default).</summary>
    public bool? TrimPerTensor { get; init; }

    /// <summary>True: agreeing entries averaged; false: summed (the default).</summary>
    public bool? MergeByMean { get; init; }

    /// <inheritdoc/>
    public override string Method => "ties";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> MethodParameters() =>
    [
        ("lambda", Lambda), ("keep", Keep),
        ("trim", TrimPerTensor is { } perTensor ? perTensor ? "per-tensor" : "global" : null),
        ("merge-func", MergeByMean is { } mean ? mean ? "mean" : "sum" : null),
    ];
}

/// <summary>DARE: task-vector entries dropped with probability p, the rest rescaled by 1/(1−p), then task arithmetic or TIES.</summary>
public sealed record DareSettings : OneModelMergeSettings
{
    /// <summary>Probability p of dropping each task-vector entry, in [0, 1) (default 0.5).</summary>
    public double? DropRate { get; init; }

    /// <summary>Seed of the random drop masks (default 0).</summary>
    public int? Seed { get; init; }

    /// <summary>True: TIES merges the dropped task vectors; false: task arithmetic (the default).</summary>
    public bool? ThenTies { get; init; }

    /// <summary>λ scaling the merged task vector (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>TIES only: fraction of each task vector's largest-magnitude entries kept by the trim (default 0.2).</summary>
    public double? Keep { get; init; }

    /// <summary>TIES only. True: threshold per tensor (mergekit); false: over the whole model (FusionBench, the default).</summary>
    public bool? TrimPerTensor { get; init; }

    /// <summary>TIES only. True: agreeing entries averaged; false: summed (the default).</summary>
    public bool? MergeByMean { get; init; }

    /// <inheritdoc/>
    public override string Method => "dare";

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">A TIES setting without <see cref="ThenTies"/>: it would have no effect.</exception>
    protected override IEnumerable<(string, object?)> MethodParameters()
    {
        if (ThenTies != true && (Keep, TrimPerTensor, MergeByMean) is not (null, null, null))
            throw new ArgumentException("DareSettings: Keep, TrimPerTensor and MergeByMean set how TIES merges the dropped task vectors; set ThenTies = true, or leave them unset for task arithmetic.");
        return Parameters();
    }

    private IEnumerable<(string, object?)> Parameters() =>
    [
        ("drop-rate", DropRate), ("seed", Seed), ("then", ThenTies is { } ties ? ties ? "ties" : "task-arithmetic" : null),
        ("lambda", Lambda), ("keep", Keep),
        ("trim", TrimPerTensor is { } perTensor ? perTensor ? "per-tensor" : "global" : null),
        ("merge-func", MergeByMean is { } mean ? mean ? "mean" : "sum" : null),
    ];
}

/// <summary>TALL masks: a shared τ_MTL = Σ τ_i plus a mask per task; task t's model is θ0 + m_t ⊙ τ_MTL (the task known at inference).</summary>
public sealed record TallMasksSettings : AlgorithmSettings
{
    /// <summary>λ scaling the task-agnostic model θ0 + λ·τ_MTL (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>λ_t of the masks m_t = |τ_t| ≥ λ_t·|τ_MTL − τ_t|, each ≥ 0: one value for every expert or one per expert (default 0.4).</summary>
    public IReadOnlyList<double>? TallLambda { get; init; }

    /// <inheritdoc/>
    public override string Method => "tall-masks";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() => [("lambda", Lambda), ("tall-lambda", TallLambda)];
}

/// <summary>Consensus merging: task arithmetic restricted to the weights that the TALL masks of at least k tasks keep.</summary>
public sealed record ConsensusSettings : OneModelMergeSettings
{
    /// <summary>λ scaling the kept multi-task vector (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>λ_t of the TALL masks, each ≥ 0: one value for every expert or one per expert (default 0.4).</summary>
    public IReadOnlyList<double>? TallLambda { get; init; }

    /// <summary>k: a weight is kept when at least k task masks select it (default 2).</summary>
    public int? MinTasks { get; init; }

    /// <inheritdoc/>
    public override string Method => "consensus";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> MethodParameters() =>
        [("lambda", Lambda), ("tall-lambda", TallLambda), ("min-tasks", MinTasks)];
}

/// <summary>
/// EMR-Merging: a unified task vector (elected sign, largest agreeing magnitude) plus a mask and a rescaler per task (the
/// task known at inference). It takes no parameters.
/// </summary>
public sealed record EmrSettings : AlgorithmSettings
{
    /// <inheritdoc/>
    public override string Method => "emr";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() => [];
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

    /// <summary>Route on the batch mean of the routing weights (FusionBench's granularity) instead of per sample (default false).</summary>
    public bool? BatchReduce { get; init; }

    /// <summary>Routing weights: <c>linear</c>, the routers' raw outputs (default, the paper's), or <c>softmax</c> over the experts.</summary>
    public string? Routing { get; init; }

    /// <summary>
    /// With softmax routing: weight of a term pulling each task's images to its own expert's MLPs, added to the entropy
    /// (default 0, entropy alone as in the paper).
    /// </summary>
    public double? TaskRouting { get; init; }

    /// <summary>
    /// Weight of a term rewarding answers spread over the classes within each task's batch (the entropy of the batch's mean
    /// prediction), subtracted from the entropy against collapse to one confident answer (default 0, entropy alone).
    /// </summary>
    public double? Diversity { get; init; }

    /// <summary>E-WEMoE only: fraction of every MLP task-vector tensor kept (default 0.1).</summary>
    public double? Keep { get; init; }

    /// <summary>Seed of the router initialisation and of the batch order (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => Efficient ? "e-wemoe" : "wemoe";

    /// <inheritdoc/>
    /// <exception cref="ArgumentException"><see cref="Keep"/> without <see cref="Efficient"/>, or <see cref="TaskRouting"/> without softmax routing.</exception>
    protected override IEnumerable<(string, object?)> Given()
    {
        if (Keep is not null && !Efficient)
            throw new ArgumentException("WeightEnsemblingSettings: Keep prunes E-WEMoE's task vectors; set Efficient = true, or leave it unset.");
        if (TaskRouting is > 0 && !string.Equals(Routing, "softmax", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException("WeightEnsemblingSettings: TaskRouting needs Routing = \"softmax\" (its term is −log of the own expert's routing weight).");
        return Parameters();
    }

    private IEnumerable<(string, object?)> Parameters() =>
    [
        ("steps", Steps), ("learning-rate", LearningRate), ("batch", Batch), ("lambda", Lambda),
        ("router-depth", RouterDepth), ("batch-reduce", BatchReduce), ("routing", Routing), ("task-routing", TaskRouting), ("keep", Keep),
        ("diversity", Diversity), ("seed", Seed),
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

    /// <summary>Merge with the coefficients clamped to [0, 1], as AdaMerging's code does (default true).</summary>
    public bool? Clamp { get; init; }

    /// <summary>
    /// Weight of a term rewarding answers spread over the classes within each task's batch (the entropy of the batch's mean
    /// prediction), subtracted from the entropy against collapse to one confident answer (default 0, entropy alone).
    /// </summary>
    public double? Diversity { get; init; }

    /// <summary>Seed of the batch order (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => TaskWise ? "adamerging-task" : "adamerging-layer";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() =>
        [("steps", Steps), ("learning-rate", LearningRate), ("batch", Batch), ("lambda", Lambda), ("clamp", Clamp),
         ("diversity", Diversity), ("seed", Seed)];
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

    /// <summary>True: statistics per channel and token position; false: per channel over every token (the paper's, the default).</summary>
    public bool? PerToken { get; init; }

    /// <summary>The base method's λ, for a base method that has one (default 0.3).</summary>
    public double? Lambda { get; init; }

    /// <summary>The base method's kept fraction (TIES), in (0, 1] (default 0.2).</summary>
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

/// <summary>Fisher merging: every weight averaged across experts in proportion to its diagonal Fisher information on labeled training examples.</summary>
public sealed record FisherSettings : AlgorithmSettings
{
    /// <summary>Labeled training examples per task (default 256).</summary>
    public int? Examples { get; init; }

    /// <summary>Added to every Fisher weight, &gt; 0 (default 1e-6).</summary>
    public double? Epsilon { get; init; }

    /// <summary>Seed of the choice of examples (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => "fisher";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() => [("examples", Examples), ("epsilon", Epsilon), ("seed", Seed)];
}

/// <summary>RegMean: every linear layer solved in closed form from the experts' input Gram matrices on labeled training examples; other tensors averaged.</summary>
public sealed record RegMeanSettings : AlgorithmSettings
{
    /// <summary>Labeled training examples per task (default 256).</summary>
    public int? Examples { get; init; }

    /// <summary>Scale of the Gram matrices' off-diagonal entries, in [0, 1] (default 0.95).</summary>
    public double? Alpha { get; init; }

    /// <summary>Seed of the choice of examples (default 0).</summary>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public override string Method => "regmean";

    /// <inheritdoc/>
    protected override IEnumerable<(string, object?)> Given() => [("examples", Examples), ("alpha", Alpha), ("seed", Seed)];
}
