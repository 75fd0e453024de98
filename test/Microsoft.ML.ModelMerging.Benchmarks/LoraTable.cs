using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Experiments.Charts;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Issue 15's comparison (arXiv 2310.04742, "Parameter Efficient Multi-task Model Fusion with Partial Linearization") on
/// the default zoo: full fine-tuning, LoRA and L-LoRA experts of the same tasks; per mode the individual accuracy,
/// trainable parameters and fine-tuning time, task arithmetic and TIES (λ / k chosen on validation) normalised to that
/// mode's own individual experts, and the cosine similarity of the task vectors (Markdown and PNG heatmaps).
/// </summary>
internal static class LoraTable
{
    /// <summary>
    /// The comparison's grids for task arithmetic and TIES with λ = 0.02 and 0.05 added below its 0.1: adapters trained at a
    /// large learning rate (and the zoo's own experts) choose the grid's smallest λ, so the grid is widened downwards.
    /// </summary>
    private static readonly (string Row, IReadOnlyList<MergeCandidate> Grid)[] Grids =
    [
        ("Task arithmetic", Widened("task-arithmetic")),
        ("TIES", Widened("ties")),
    ];

    /// <summary>
    /// The paper's own arithmetic for adapter pools: task vectors φ_t − φ0 of the LoRA factors (peta merges the PEFT model's
    /// state dict), the merged adapter densified once. Full experts have no factors.
    /// </summary>
    private static readonly (string Row, IReadOnlyList<MergeCandidate> Grid)[] FactorGrids =
    [
        ("Task arithmetic on the factors", Widened("task-arithmetic", factors: true)),
        ("TIES on the factors", Widened("ties", factors: true)),
    ];

    private static IReadOnlyList<MergeCandidate> Widened(string method, bool factors = false)
    {
        var grid = MergeAlgorithmRegistry.Default.Get(method).SearchGrid.ToDictionary(kv => kv.Key, kv => kv.Value);
        grid["lambda"] = [.. new[] { "0.02", "0.05" }.Concat(grid["lambda"]).Distinct()];
        if (factors) grid[LoraMergeSpaces.ParameterName] = [LoraMergeSpaces.Factors];
        return MergeCandidate.Grid(method, grid);
    }

    /// <param name="zoo">The full-fine-tuning pool; the adapter pools are <c>&lt;zoo&gt;/lora</c> and <c>&lt;zoo&gt;/l-lora</c>.</param>
    /// <param name="output">Where the heatmaps are written.</param>
    /// <param name="fullTiming">
    /// Optional: a pool of full experts fine-tuned again behind the zoo's heads with the zoo's recipe (<c>mlmerge finetune
    /// --mode full --head</c>), whose reports hold the fine-tuning time the zoo's build did not record.
    /// </param>
    /// <param name="timingSteps">Steps of each mode timed side by side in this process (0: skip).</param>
    public static int Run(string zoo, string output, string? fullTiming, int timingSteps)
    {
        Directory.CreateDirectory(output);
        var modes = new (string Mode, string Pool)[]
        {
            (FineTuningModes.Full, zoo), (FineTuningModes.Lora, Path.Combine(zoo, "lora")), (FineTuningModes.LinearizedLora, Path.Combine(zoo, "l-lora")),
        };
        var summary = new StringBuilder();
        summary.AppendLine("| mode | trainable parameters | fine-tuning time (8 tasks) | pre-trained probe avg | individual avg | TA avg | TA norm. | TA gain retained | TIES avg | TIES norm. | TIES gain retained | TA on the factors, norm. | TIES on the factors, norm. | mean cos(τ_i, τ_j) |");
        summary.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var details = new StringBuilder();
        var curve = new Dictionary<(string Mode, double Lambda), (double Average, double Retained)>();
        foreach (var (mode, poolPath) in modes)
        {
            if (!PoolManifest.Exists(poolPath))
            {
                Console.Error.WriteLine($"{mode}: no pool at {poolPath}, skipped");
                continue;
            }
            using var pool = ExpertPool.Load(poolPath);
            var tasks = pool.TaskNames;
            var individual = pool.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
            var table = new AccuracyTable(tasks, individual);
            table.Add("Individual", new TaskAccuracies(individual));
            var results = new Dictionary<string, TaskAccuracies>();
            using (var evaluator = new CandidateEvaluator(pool))
            {
                foreach (var (row, grid) in mode == FineTuningModes.Full ? Grids : [.. Grids, .. FactorGrids])
                {
                    var clock = Stopwatch.StartNew();
                    var (best, all) = evaluator.SelectOnValidation(grid);
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{mode} {row}: {all.Count} candidate(s) in {clock.Elapsed.TotalSeconds:F0} s, best on validation {best.Candidate} ({100 * best.Validation.Average:F1}%)"));
                    table.Add(row, best.Test!, best.Candidate.ToString());
                    results[row] = best.Test!;
                }

                // Task arithmetic along λ on test: how fast adding the task vectors destroys what each expert learned.
                foreach (double lambda in CurveLambdas)
                {
                    var evaluated = evaluator.Evaluate(new MergeCandidate("task-arithmetic", new Dictionary<string, string> { ["lambda"] = lambda.ToString(CultureInfo.InvariantCulture) }));
                    curve[(mode, lambda)] = (evaluated.Test!.Average, Retained(pool, evaluated.Test!));
                }
            }

            var cosine = TaskVectorSimilarity.Cosine(pool);
            string png = HeatmapChart.Save(Path.Combine(output, $"task-vector-cosine-{mode}.png"), $"cosine similarity of the task vectors: {mode}", tasks, cosine);
            double meanCosine = TaskVectorSimilarity.MeanOffDiagonal(cosine);

            long trainable = mode == FineTuningModes.Full
                ? pool.Pretrained.Values.Where(t => t.is_floating_point()).Sum(t => t.numel())
                : Reports(poolPath, tasks).Select(r => r.GetProperty("trainable_parameters").GetInt64()).Distinct().Single();
            double? seconds = mode == FineTuningModes.Full
                ? fullTiming is not null && PoolManifest.Exists(fullTiming) ? Reports(fullTiming, tasks).Sum(r => r.GetProperty("fine_tuning_seconds").GetDouble()) : null
                : Reports(poolPath, tasks).Sum(r => r.GetProperty("fine_tuning_seconds").GetDouble());

            static string Pct(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture);
            string FactorColumn(string row) => results.TryGetValue(row, out var r) ? Pct(r.NormalizedAverage(individual)) : "(no factors)";
            var ind = new TaskAccuracies(individual);
            summary.AppendLine(CultureInfo.InvariantCulture,
                $"| {mode} | {trainable:N0} | {(seconds is double s ? $"{s:F0} s" : "not measured")} | {Pct(pool.Tasks.Average(t => t.PretrainedLinearProbe.Test))} | {Pct(ind.Average)} | " +
                $"{Pct(results["Task arithmetic"].Average)} | {Pct(results["Task arithmetic"].NormalizedAverage(individual))} | {Pct(Retained(pool, results["Task arithmetic"]))} | " +
                $"{Pct(results["TIES"].Average)} | {Pct(results["TIES"].NormalizedAverage(individual))} | {Pct(Retained(pool, results["TIES"]))} | " +
                $"{FactorColumn("Task arithmetic on the factors")} | {FactorColumn("TIES on the factors")} | {meanCosine:F3} |");

            details.AppendLine(CultureInfo.InvariantCulture, $"### {mode} ({poolPath})");
            details.AppendLine();
            details.AppendLine(table.ToMarkdown());
            details.AppendLine(CultureInfo.InvariantCulture, $"Cosine similarity of the task vectors ({png}):");
            details.AppendLine();
            details.AppendLine("| | " + string.Join(" | ", tasks) + " |");
            details.AppendLine("|---|" + string.Concat(tasks.Select(_ => "---:|")));
            for (int i = 0; i < tasks.Count; i++)
                details.AppendLine($"| {tasks[i]} | " + string.Join(" | ", Enumerable.Range(0, tasks.Count).Select(j => cosine[i, j].ToString("F2", CultureInfo.InvariantCulture))) + " |");
            details.AppendLine();
        }

        Console.WriteLine(summary.ToString());
        var done = modes.Select(m => m.Mode).Where(m => curve.ContainsKey((m, CurveLambdas[0]))).ToList();
        Console.WriteLine("Task arithmetic along λ (test): average accuracy / share of the fine-tuning gain retained, mean over tasks of " +
            "(merged − pre-trained probe) / (individual − pre-trained probe):");
        Console.WriteLine();
        Console.WriteLine("| λ | " + string.Join(" | ", done) + " |");
        Console.WriteLine("|---:|" + string.Concat(done.Select(_ => "---:|")));
        foreach (double lambda in CurveLambdas)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {lambda} | ") + string.Join(" | ", done.Select(m =>
                string.Create(CultureInfo.InvariantCulture, $"{100 * curve[(m, lambda)].Average:F1} / {100 * curve[(m, lambda)].Retained:F0}%"))) + " |");
        Console.WriteLine();
        Console.WriteLine(details.ToString());
        if (timingSteps > 0) Console.WriteLine(StepTiming(zoo, timingSteps));
        return 0;
    }

    private static readonly double[] CurveLambdas = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0];

    /// <summary>Mean over tasks of (merged − pre-trained probe) / (individual − pre-trained probe), test split.</summary>
    private static double Retained(ExpertPool pool, TaskAccuracies merged) => pool.Tasks.Average(t =>
        (merged.PerTask[t.Name] - t.PretrainedLinearProbe.Test) / Math.Max(1e-9, t.Individual.Test - t.PretrainedLinearProbe.Test));

    private static IEnumerable<JsonElement> Reports(string pool, IEnumerable<string> tasks) =>
        tasks.Select(t => JsonDocument.Parse(File.ReadAllText(Path.Combine(pool, "experts", t + ".json"))).RootElement);

    /// <summary>
    /// Seconds per training step of each mode, measured side by side in this process (rounds alternate the modes, the
    /// median is reported): the fair comparison on a shared machine.
    /// </summary>
    private static string StepTiming(string zoo, int steps)
    {
        using var pool = ExpertPool.Load(zoo);
        string task = pool.TaskNames[0];
        var splits = pool.LoadData(task);
        var recipe = new ZooRecipe().FineTuning;
        var subset = splits.Train.Select([.. Enumerable.Range(0, Math.Min(splits.Train.Count, steps * recipe.BatchSize))], task + "/timing");
        var data = new Data.TaskSplits(subset, splits.Validation, splits.Test);
        var lora = new LoraOptions();
        var perStep = FineTuningModes.All.ToDictionary(m => m, _ => new List<double>());
        for (int round = 0; round < 3; round++)
        {
            foreach (string mode in FineTuningModes.All)
            {
                var head = ModelCheckpoints.LoadHead(Path.Combine(pool.Directory, pool.Manifest.Task(task).Head));
                var options = mode == FineTuningModes.Full ? null : lora with { Linearized = mode == FineTuningModes.LinearizedLora };
                using var result = ExpertTrainer.FineTune(pool.Config, pool.Pretrained, data, head, new SplitAccuracy(0, 0),
                    recipe with { Epochs = 1, LearningRate = mode == FineTuningModes.Full ? recipe.LearningRate : 1e-3 }, seed: 0, options);
                perStep[mode].Add(result.FineTuningSeconds / Math.Ceiling((double)subset.Count / recipe.BatchSize));
            }
        }

        double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
        double full = Median(perStep[FineTuningModes.Full]);
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Step time, {steps} steps of {recipe.BatchSize} images of {task} per mode, 3 alternating rounds, median (the per-task times include evaluation-free fine-tuning only):");
        text.AppendLine();
        text.AppendLine("| mode | s / step | relative to full |");
        text.AppendLine("|---|---:|---:|");
        foreach (string mode in FineTuningModes.All)
            text.AppendLine(CultureInfo.InvariantCulture, $"| {mode} | {Median(perStep[mode]):F3} | {Median(perStep[mode]) / full:F2} |");
        return text.ToString();
    }
}
