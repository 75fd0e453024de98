using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// The non-local merging table (FusionBench layout, test split): simple average, task arithmetic and TIES, each
/// {unaligned, aligned} × {uncorrected, TACT}; λ chosen on the validation split per row. Also how far apart the experts are
/// before and after alignment, and what alignment and TACT cost as ratios to one forward pass over the images they read.
/// Prints Markdown for docs/benchmarks.md.
/// </summary>
internal static class NonLocalTable
{
    private static readonly string[] TaskArithmeticLambdas = ["0.1", "0.2", "0.3", "0.5", "0.7", "1"];
    private static readonly string[] TiesLambdas = ["0.3", "0.5", "0.8", "1"];

    public static int Run(string poolDirectory, IReadOnlyList<(string Label, string Directory)> alignedPools, int examples, bool align = true,
        IReadOnlyList<string>? statistics = null, bool baselines = true)
    {
        using var pool = ExpertPool.Load(poolDirectory);
        double forward = ForwardSeconds(pool, examples);
        var sources = new List<(string Label, string Directory)> { ("unaligned", poolDirectory) };
        if (alignedPools.Count > 0)
        {
            sources.AddRange(alignedPools);
        }
        else if (align)
        {
            foreach (string method in new[] { PoolAlignment.Method, PoolAlignment.ActivationMethod })
            {
                string aligned = Path.Combine(Path.GetTempPath(), $"mlmerge-aligned-{Guid.NewGuid():N}");
                var clock = Stopwatch.StartNew();
                var result = PoolAlignment.Run(pool, aligned, new PoolAlignmentOptions { Method = method });
                double seconds = clock.Elapsed.TotalSeconds;
                Console.WriteLine($"### Alignment by {method}");
                Console.WriteLine(Distances(result));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{seconds:F1} s for {result.Foundations.Count} foundation(s) and {result.Experts.Count} experts = {seconds / forward:F1}× one forward pass of {examples} images of every task ({forward:F2} s)."));
                sources.Add(($"aligned ({method})", aligned));
            }
        }

        var tasks = pool.TaskNames;
        var individual = pool.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(tasks, individual);
        table.Add("Individual", new TaskAccuracies(individual));
        var tactSeconds = new List<double>();
        foreach (var (label, directory) in sources)
        {
            using var source = ExpertPool.Load(directory);
            using var evaluator = new CandidateEvaluator(source);
            foreach (var (row, grid) in Rows(examples, statistics ?? ["channel", "token"], baselines))
            {
                var clock = Stopwatch.StartNew();
                var (best, all) = evaluator.SelectOnValidation(grid);
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{row}, {label}: {all.Count} candidate(s) in {clock.Elapsed.TotalSeconds:F0} s, best on validation {best.Candidate} ({100 * best.Validation.Average:F1}%), merge {best.MergeSeconds:F1} s"));
                if (best.Candidate.Method == "tact") tactSeconds.Add(best.MergeSeconds);
                table.Add($"{row}, {label}", best.Test!, grid.Count > 1 ? best.Candidate.ToString() : "");
            }
        }

        Console.WriteLine(table.ToMarkdown());
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"TACT (base merge + statistics + correction of every task): median {Median(tactSeconds):F1} s = {Median(tactSeconds) / forward:F1}× one forward pass of {examples} images of every task ({forward:F2} s)."));
        return 0;
    }

    private static double Median(List<double> values) => values.Count == 0 ? double.NaN : values.Order().ElementAt(values.Count / 2);
    /// <summary>Rows: each base merge uncorrected and with TACT at each granularity, λ searched for TA and TIES.</summary>
    private static IEnumerable<(string Row, IReadOnlyList<MergeCandidate> Grid)> Rows(int examples, IReadOnlyList<string> statistics, bool baselines)
    {
        string n = examples.ToString(CultureInfo.InvariantCulture);
        foreach (var (row, method, lambdas) in new (string, string, string?[]?)[] { ("Simple average", "simple-average", null), ("Task arithmetic", "task-arithmetic", TaskArithmeticLambdas), ("TIES", "ties", TiesLambdas) })
        {
            Dictionary<string, string> With(string? lambda, Dictionary<string, string> more)
            {
                if (lambda is not null) more["lambda"] = lambda;
                return more;
            }

            if (baselines) yield return (row, [.. (lambdas ?? new string?[] { null }).Select(l => new MergeCandidate(method, With(l, [])))]);
            foreach (string granularity in statistics)
            {
                yield return ($"{row} + TACT ({granularity})", [.. (lambdas ?? new string?[] { null }).Select(l => new MergeCandidate("tact",
                    With(l, new() { ["base-method"] = method, ["examples"] = n, ["statistics"] = granularity })))]);
            }
        }
    }

    private static string Distances(PoolAlignmentResult result)
    {
        // Activation matching solves each group once: only weight matching's descent has passes to count.
        bool descends = result.Manifest.Alignment?.Method == PoolAlignment.Method;
        var lines = new List<string> { "| model | L2 distance to the reference, before | after |" + (descends ? " weight-matching passes |" : ""), descends ? "|---|---|---|---|" : "|---|---|---|" };
        foreach (var m in result.Foundations.Concat(result.Experts))
        {
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| {m.Name} | {m.DistanceBefore:F2} | {m.DistanceAfter:F2} |") + (descends ? $" {m.Iterations} |" : ""));
        }

        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>Seconds of one forward pass of the pre-trained (or first) backbone over <paramref name="examples"/> test images of every task.</summary>
    private static double ForwardSeconds(ExpertPool pool, int examples)
    {
        var weights = pool.HasPretrained ? pool.Pretrained : pool.Expert(pool.TaskNames[0]);
        double total = 0;
        foreach (string task in pool.TaskNames)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            Tensor images = pool.LoadData(task).Test.ToTensor();
            images = images.narrow(0, 0, Math.Min(examples, images.shape[0]));
            var clock = Stopwatch.StartNew();
            VisionTransformer.Forward(pool.Config, weights, images);
            total += clock.Elapsed.TotalSeconds;
        }

        return total;
    }
}
