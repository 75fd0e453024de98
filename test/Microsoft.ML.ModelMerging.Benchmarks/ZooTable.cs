using Microsoft.ML.ModelMerging.Algorithms;
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// The zoo's accuracy table for the weight-only methods (FusionBench layout, test split), each method's λ / k chosen on the
/// validation split from a small grid. Prints Markdown for docs/benchmarks.md.
/// </summary>
internal static class ZooTable
{
    /// <summary>Row labels of the table; the grids are the comparison's weight-only ones (<see cref="MergeMethodSearch.WeightOnly"/>).</summary>
    private static readonly Dictionary<string, string> RowNames = new()
    {
        ["simple-average"] = "Simple average", ["task-arithmetic"] = "Task arithmetic", ["ties"] = "TIES", ["dare"] = "DARE (+TA)",
        ["tall-masks"] = "TALL masks", ["consensus"] = "Consensus (TA)", ["emr"] = "EMR",
    };

    public static IReadOnlyList<(string Row, IReadOnlyList<MergeCandidate> Grid)> Grids { get; } =
        MergeMethodSearch.WeightOnly.Select(d => (RowNames.GetValueOrDefault(d.Method, d.Method), d.Candidates)).ToList();

    public static int Run(string zoo, IReadOnlyCollection<string>? rows)
    {
        using var experts = ExpertPool.Load(zoo);
        var tasks = experts.TaskNames;
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(tasks, individual);
        table.Add("Pre-trained (linear probe)", new TaskAccuracies(experts.Tasks.ToDictionary(t => t.Name, t => t.PretrainedLinearProbe.Test)));
        table.Add("Individual", new TaskAccuracies(individual));
        using var evaluator = new CandidateEvaluator(experts);
        foreach (var (row, grid) in Grids)
        {
            if (rows is { Count: > 0 } && !rows.Contains(row, StringComparer.OrdinalIgnoreCase)) continue;
            var clock = Stopwatch.StartNew();
            var (best, all) = evaluator.SelectOnValidation(grid);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{row}: {all.Count} candidate(s) in {clock.Elapsed.TotalSeconds:F0} s, best on validation {best.Candidate} ({100 * best.Validation.Average:F1}%)"));
            table.Add(row, best.Test!, grid.Count > 1 ? best.Candidate.ToString() : "");
        }
        Console.WriteLine(table.ToMarkdown());
        return 0;
    }
}
