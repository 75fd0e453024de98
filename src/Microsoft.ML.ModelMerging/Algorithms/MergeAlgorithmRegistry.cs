using System.Text;
using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// Every merge algorithm by name: the weight-only methods of <see cref="MergeMethodRegistry"/>, the data-based ones (Fisher,
/// RegMean), the test-time adaptation ones (AdaMerging, WEMoE, E-WEMoE) and TACT's correction of a weight-only merge. Immutable; <see cref="With"/> adds one.
/// </summary>
public sealed class MergeAlgorithmRegistry
{
    private static readonly IReadOnlyList<string> Lambdas = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"];

    private readonly Dictionary<string, IMergeAlgorithm> _byName = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>A registry of the given algorithms, in that order; names are looked up case-insensitively.</summary>
    /// <exception cref="ArgumentException">Two algorithms share a name.</exception>
    public MergeAlgorithmRegistry(IEnumerable<IMergeAlgorithm> algorithms)
    {
        ArgumentNullException.ThrowIfNull(algorithms);
        Algorithms = [.. algorithms];
        foreach (var algorithm in Algorithms)
        {
            if (!_byName.TryAdd(algorithm.Name, algorithm))
            {
                throw new ArgumentException($"Merge algorithm '{algorithm.Name}' is registered twice.", nameof(algorithms));
            }
        }
    }

    /// <summary>The built-in algorithms in the order <c>compare</c> tries them: weight-only, test-time adaptation, data-based.</summary>
    public static MergeAlgorithmRegistry Default { get; } = new(
    [
        new WeightOnlyAlgorithm(SimpleAverageMerge.Descriptor),
        new WeightOnlyAlgorithm(TaskArithmeticMerge.Descriptor, new() { ["lambda"] = Lambdas }),
        new WeightOnlyAlgorithm(TiesMerge.Descriptor, new() { ["lambda"] = Lambdas, ["keep"] = ["0.1", "0.2"] }),
        new WeightOnlyAlgorithm(DareMerge.Descriptor, new() { ["lambda"] = Lambdas, ["drop-rate"] = ["0.5"] }),
        new WeightOnlyAlgorithm(TallMasksMerge.Descriptor, new() { ["lambda"] = ["0.3", "0.5", "1"], ["tall-lambda"] = ["0.2", "0.4", "0.6"] }),
        new WeightOnlyAlgorithm(ConsensusMerge.Descriptor, new() { ["lambda"] = Lambdas }),
        new WeightOnlyAlgorithm(EmrMerge.Descriptor),
        // The flagship first among the adaptive methods, so a tight comparison budget still reaches it.
        WeightEnsemblingAlgorithm.Dense,
        AdaMergingAlgorithm.LayerWise,
        WeightEnsemblingAlgorithm.Efficient,
        AdaMergingAlgorithm.TaskWise,
        TactAlgorithm.Instance,
        FisherAlgorithm.Instance,
        RegMeanAlgorithm.Instance,
    ]);

    /// <summary>In registration order.</summary>
    public IReadOnlyList<IMergeAlgorithm> Algorithms { get; }

    /// <summary>Looks an algorithm up by name (trimmed, case-insensitive); false when there is none.</summary>
    public bool TryGet(string name, out IMergeAlgorithm algorithm) => _byName.TryGetValue(name.Trim(), out algorithm!);

    /// <exception cref="ArgumentException">No algorithm of that name.</exception>
    public IMergeAlgorithm Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryGet(name, out var algorithm)
            ? algorithm
            : throw new ArgumentException($"Unknown merge method '{name}' (known: {string.Join(", ", Algorithms.Select(a => a.Name))}).");
    }

    /// <summary>A registry with one more algorithm.</summary>
    public MergeAlgorithmRegistry With(IMergeAlgorithm algorithm) => new([.. Algorithms, algorithm]);

    /// <summary>The text of <c>mlmerge merge --list</c>: every algorithm with what it needs, its parameters and defaults.</summary>
    public string Describe() => string.Join(Environment.NewLine, Algorithms.Select(Describe));

    /// <summary>An algorithm's <c>merge --list</c> entry: name, summary, needs, then one line per parameter with its default and accepted values.</summary>
    public static string Describe(IMergeAlgorithm algorithm)
    {
        var text = new StringBuilder();
        text.Append(algorithm.Name).Append(": ").Append(algorithm.Summary);
        if (NeedsText(algorithm.Needs) is { Length: > 0 } needs)
        {
            text.Append(" [needs ").Append(needs).Append(']');
        }

        foreach (var parameter in algorithm.Parameters)
        {
            text.AppendLine().Append("    ").Append(parameter);
        }

        if (algorithm.Parameters.Count == 0)
        {
            text.AppendLine().Append("    (no parameters)");
        }

        return text.ToString();
    }

    /// <summary>E.g. <c>a pre-trained base, unlabeled images</c>; empty when the algorithm needs nothing beyond the experts.</summary>
    public static string NeedsText(AlgorithmNeeds needs) => string.Join(", ", new[]
    {
        needs.HasFlag(AlgorithmNeeds.PretrainedBase) ? "a pre-trained base" : null,
        needs.HasFlag(AlgorithmNeeds.LabeledData) ? "labeled training examples" : null,
        needs.HasFlag(AlgorithmNeeds.UnlabeledImages) ? "unlabeled images per task" : null,
        needs.HasFlag(AlgorithmNeeds.TaskAtInference) ? "the task at inference" : null,
    }.Where(n => n is not null));
}
