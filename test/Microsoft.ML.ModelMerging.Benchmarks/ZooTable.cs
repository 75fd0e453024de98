using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// The zoo's accuracy table for the weight-only methods (FusionBench layout, test split), each method's λ / k chosen on the
/// validation split from a small grid. Prints Markdown for docs/benchmarks.md.
/// </summary>
internal static class ZooTable
{
    private static readonly double[] Lambdas = { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 };

    public static IReadOnlyList<(string Row, IReadOnlyList<MergeCandidate> Grid)> Grids { get; } = new (string, IReadOnlyList<MergeCandidate>)[]
    {
        ("Simple average", new[] { new MergeCandidate("simple-average") }),
        ("Task arithmetic", MergeCandidate.Grid("task-arithmetic", new Dictionary<string, double[]> { ["lambda"] = Lambdas })),
        ("TIES", MergeCandidate.Grid("ties", new Dictionary<string, double[]> { ["lambda"] = Lambdas, ["keep"] = new[] { 0.1, 0.2 } })),
        ("DARE (+TA)", MergeCandidate.Grid("dare", new Dictionary<string, double[]> { ["lambda"] = Lambdas, ["drop-rate"] = new[] { 0.5 } })),
        ("TALL masks", MergeCandidate.Grid("tall-masks", new Dictionary<string, double[]> { ["lambda"] = new[] { 0.3, 0.5, 1.0 }, ["tall-lambda"] = new[] { 0.2, 0.4, 0.6 } })),
        ("Consensus (TA)", MergeCandidate.Grid("consensus", new Dictionary<string, double[]> { ["lambda"] = Lambdas })),
        ("EMR", new[] { new MergeCandidate("emr") }),
    };

    public static int Run(string zoo, IReadOnlyCollection<string>? rows)
    {
        using var experts = ExpertSet.Load(zoo);
        var tasks = experts.TaskNames;
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(tasks, individual);
        table.Add("Pre-trained (linear probe)", new TaskAccuracies(experts.Tasks.ToDictionary(t => t.Name, t => t.PretrainedLinearProbe.Test)));
        table.Add("Individual", new TaskAccuracies(individual));
        var evaluator = new StaticMergeEvaluator(experts);
        foreach (var (row, grid) in Grids)
        {
            if (rows is { Count: > 0 } && !rows.Contains(row, StringComparer.OrdinalIgnoreCase)) continue;
            var clock = Stopwatch.StartNew();
            var (best, all) = evaluator.SelectOnValidation(grid);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{row}: {all.Count} candidate(s) in {clock.Elapsed.TotalSeconds:F0} s, best on validation {best.Candidate} ({100 * best.Validation.Average:F1}%)"));
            table.Add(row, best.Test, grid.Count > 1 ? best.Candidate.ToString() : "");
        }
        Console.WriteLine(table.ToMarkdown());
        return 0;
    }
}
