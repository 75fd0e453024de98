using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary><c>mlmerge compare</c>: AutoML-style comparison of merge strategies with a leaderboard, a report and charts.</summary>
internal static class CompareCommand
{
    public static Command Create()
    {
        var zoo = new Option<string[]>("--zoo")
        {
            Description = "Zoo directory (experts, heads, task data); repeat it to rank pools of the same tasks side by side (e.g. full, LoRA and L-LoRA experts), each normalised by its own experts.",
            DefaultValueFactory = _ => ["zoos/default"],
        };
        var tasks = new Option<string[]>("--task") { Description = "Only these tasks (default: all of the zoo's)." };
        var methods = new Option<string?>("--methods") { Description = "Comma-separated methods (default: " + string.Join(",", MergeMethodSearch.Defaults.Select(d => d.Method)) + ")." };
        var budget = new Option<string?>("--time-budget") { Description = "Stop starting new candidates once the whole comparison (every pool) has run this long, e.g. 15m, 90s, 1h, or none [30m]." };
        var metric = new Option<string>("--metric") { Description = "average | normalized | worst", DefaultValueFactory = _ => "average" };
        var noOnnx = new Option<bool>("--no-onnx") { Description = "Skip the ONNX export that measures model size and latency." };
        var ttaSteps = new Option<int>("--tta-steps")
        {
            Description = "Test-time adaptation steps of the adaptive methods (wemoe, e-wemoe, adamerging-*); the full protocol uses 1000.",
            DefaultValueFactory = _ => MergeMethodSearch.DefaultAdaptationSteps,
        };
        var output = new Option<string>("--out") { Description = "Directory for leaderboard.csv/json, report.md and charts.", Required = true };
        var command = new Command("compare", "Rank merge strategies on the zoo: validation chooses, test reports.") { zoo, tasks, methods, budget, metric, noOnnx, ttaSteps, output };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            string[] zoos = parse.GetValue(zoo) is { Length: > 0 } given ? given : ["zoos/default"];
            int steps = parse.GetValue(ttaSteps);
            if (steps <= 0) throw new ArgumentException($"--tta-steps must be positive (got {steps}).");
            var searches = MergeMethodSearch.For(
                parse.GetValue(methods) is { } list ? list.Split(',', StringSplitOptions.RemoveEmptyEntries) : MergeMethodSearch.Defaults.Select(d => d.Method), steps);
            if (searches.Any(s => AdaptationJob.RunsInSteps(MergeAlgorithmRegistry.Default.Get(s.Method))))
                writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"adaptive methods adapt for {steps} steps on the unlabeled test images{(steps < 1000 ? " (shortened from the protocol's 1000: --tta-steps 1000)" : "")}"));
            var onePass = searches.Select(s => MergeAlgorithmRegistry.Default.Get(s.Method))
                .Where(a => a.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages) && !AdaptationJob.RunsInSteps(a)).Select(a => a.Name).ToList();
            if (onePass.Count > 0)
                writer.WriteLine($"{string.Join(", ", onePass)}: one pass over the unlabeled test images (no steps)");
            var options = new MergeExperimentOptions
            {
                Searches = searches,
                TimeBudget = parse.GetValue(budget) is { } b ? (b.Trim() == "none" ? null : ParseDuration(b)) : MergeExperimentOptions.DefaultTimeBudget,
                Metric = RankingMetrics.Parse(parse.GetValue(metric)!),
                MeasureOnnx = !parse.GetValue(noOnnx),
            };
            // One pool given twice would be compared twice and found only when the two are ranked together.
            if (zoos.GroupBy(z => Path.TrimEndingDirectorySeparator(Path.GetFullPath(z)), StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } repeated)
                throw new ArgumentException($"--zoo {repeated.Key} is given twice: compare different pools.");
            // The output directory exists from the start and holds the leaderboard of the methods finished so far.
            string directory = parse.GetValue(output)!;
            bool createdDirectory = !Directory.Exists(directory);
            Directory.CreateDirectory(directory);
            try
            {
                // Several pools: each compared on its own (partial results in a folder named after it), then ranked together.
                var labels = PoolLabels(zoos);
                if (zoos.Length > 1)
                {
                    // Checked before anything runs: a side-by-side ranking needs the same tasks in every pool.
                    var chosen = parse.GetValue(tasks) is { Length: > 0 } named ? named : null;
                    var taskLists = zoos.Select(z => chosen ?? [.. PoolManifest.Read(z).Tasks.Select(t => t.Name)]).ToList();
                    for (int z = 1; z < zoos.Length; z++)
                    {
                        if (!taskLists[z].SequenceEqual(taskLists[0], StringComparer.Ordinal))
                            throw new ArgumentException($"{zoos[z]} has tasks [{string.Join(", ", taskLists[z])}] and {zoos[0]} [{string.Join(", ", taskLists[0])}]: " +
                                "compare pools of the same tasks side by side (or choose common ones with --task).");
                    }
                }

                var boards = new List<(string Pool, Leaderboard Board)>();
                // The time budget is the whole comparison's: each pool gets what the pools before it left.
                var clock = System.Diagnostics.Stopwatch.StartNew();
                for (int z = 0; z < zoos.Length; z++)
                {
                    var poolOptions = options.TimeBudget is { } total ? options with { TimeBudget = TimeSpan.FromTicks(Math.Max(0, (total - clock.Elapsed).Ticks)) } : options;
                    using var experts = ExpertPool.Load(zoos[z], parse.GetValue(tasks));
                    string partials = zoos.Length == 1 ? directory : Path.Combine(directory, labels[z]);
                    string prefix = zoos.Length == 1 ? "" : $"{labels[z]}: ";
                    boards.Add((labels[z], ConsoleProgress.Run<MergeExperimentProgress, Leaderboard>(writer, "comparing",
                        p =>
                        {
                            if (p.Partial is { } partial) partial.WriteAll(partials);
                            string stage = p.Inner is { } inner ? $" · {inner.Stage}" : "";
                            return p.Inner is { Total: > 0 } step
                                ? ($"{prefix}[{p.MethodIndex + 1}/{p.MethodCount}] {p.Method}{stage}", step.Done, step.Total)
                                : ($"{prefix}[{p.MethodIndex + 1}/{p.MethodCount}] {p.Method}{stage}", p.Candidate, p.CandidateCount);
                        },
                        progress => new MergeExperiment(experts, poolOptions).Run(progress, cancellation))));
                    if (zoos.Length > 1) boards[^1].Board.WriteAll(partials);
                }

                var leaderboard = boards.Count == 1 ? boards[0].Board : Leaderboard.Combine(boards);
                var files = leaderboard.WriteAll(directory);
                writer.Write(leaderboard.ToText());
                writer.WriteLine($"report: {files.First(f => f.EndsWith("report.md", StringComparison.Ordinal))}");
                writer.WriteLine($"files: {string.Join(", ", files.Select(Path.GetFileName))}");
                // Stopped by a signal: the partial leaderboard is written, and the exit code still says it was cut short.
                if (cancellation.IsCancellationRequested)
                    throw new StoppedWithResultsException($"the leaderboard of the methods finished so far is in {Path.GetFullPath(directory)}.");
                return Task.FromResult(0);
            }
            catch when (createdDirectory && Directory.Exists(directory) && !Directory.EnumerateFileSystemEntries(directory).Any())
            {
                // Nothing finished: leave no empty directory behind that looks like a result.
                Directory.Delete(directory);
                throw;
            }
        });
        return command;
    }

    /// <summary>A short label per pool: its folder name, or its path relative to the first common folder when names repeat.</summary>
    private static string[] PoolLabels(string[] zoos)
    {
        var names = zoos.Select(z => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(z)))).ToArray();
        if (names.Distinct(StringComparer.Ordinal).Count() == names.Length) return names;
        return [.. zoos.Select(z => Path.GetRelativePath(Environment.CurrentDirectory, z).Replace('\\', '/'))];
    }

    /// <summary>Parses 90s, 15m, 1h, 1h30m or a TimeSpan (00:15:00).</summary>
    public static TimeSpan ParseDuration(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (TimeSpan.TryParse(t, CultureInfo.InvariantCulture, out var span) && t.Contains(':')) return span;
        var total = TimeSpan.Zero;
        int start = 0;
        for (int i = 0; i < t.Length; i++)
        {
            if (char.IsDigit(t[i]) || t[i] == '.') continue;
            if (i == start || !double.TryParse(t[start..i], NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                throw new ArgumentException($"Cannot read duration '{text}': expected e.g. 90s, 15m, 1h.");
            total += t[i] switch
            {
                'h' => TimeSpan.FromHours(value),
                'm' => TimeSpan.FromMinutes(value),
                's' => TimeSpan.FromSeconds(value),
                _ => throw new ArgumentException($"Cannot read duration '{text}': unknown unit '{t[i]}'."),
            };
            start = i + 1;
        }
        if (start != t.Length) throw new ArgumentException($"Cannot read duration '{text}': a number needs a unit (s, m, h).");
        return total;
    }
}
