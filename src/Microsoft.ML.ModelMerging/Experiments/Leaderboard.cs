using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.ModelMerging.Algorithms;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// The ranked result of a merge experiment. Entries are ranked by the metric on the validation split (the split the
/// choice is made on); test figures are reported beside them. Methods that need the task at inference (one model per task)
/// are ranked apart, after the task-agnostic ones: they answer an easier question. A partial leaderboard (budget spent,
/// cancelled) is valid.
/// </summary>
public sealed class Leaderboard
{
    /// <summary>Ranks <paramref name="entries"/>: task-agnostic ones first, then by validation score, ties by method name.</summary>
    /// <param name="tasks">The tasks evaluated, in column order.</param>
    /// <param name="individual">Each task's individual expert accuracy (normalises the scores).</param>
    /// <param name="metric">What the entries were ranked by.</param>
    /// <param name="entries">One entry per method, in any order.</param>
    /// <param name="complete">False when the experiment stopped before every method ran.</param>
    /// <param name="skipped">Methods not started.</param>
    public Leaderboard(IReadOnlyList<string> tasks, IReadOnlyDictionary<string, double> individual, RankingMetric metric,
        IEnumerable<LeaderboardEntry> entries, bool complete, IReadOnlyList<string> skipped)
    {
        Tasks = tasks;
        Individual = individual;
        Metric = metric;
        // Stable order: task-agnostic first, then by score, then by method name, so equal scores rank the same way every run.
        Entries = entries.OrderBy(e => e.NeedsTaskAtInference).ThenByDescending(e => e.ValidationScore).ThenBy(e => e.Method, StringComparer.Ordinal).ToList();
        Complete = complete;
        Skipped = skipped;
    }

    /// <summary>The tasks evaluated, in column order.</summary>
    public IReadOnlyList<string> Tasks { get; }
    /// <summary>Each task's individual expert accuracy on the validation split.</summary>
    public IReadOnlyDictionary<string, double> Individual { get; }

    /// <summary>
    /// Each pool's individual accuracies in a leaderboard over several pools (<see cref="Combine"/>): every entry is
    /// normalised by the experts of its own pool. Empty for one pool.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, double>> IndividualByPool { get; private init; } =
        new Dictionary<string, IReadOnlyDictionary<string, double>>(StringComparer.Ordinal);

    /// <summary>What the entries are ranked by.</summary>
    public RankingMetric Metric { get; }
    /// <summary>The entries, ranked: task-agnostic methods first, then those needing the task at inference.</summary>
    public IReadOnlyList<LeaderboardEntry> Entries { get; }
    /// <summary>False when the time budget or a cancellation stopped the experiment before every method ran.</summary>
    public bool Complete { get; }
    /// <summary>Methods that were not started (budget or cancellation).</summary>
    public IReadOnlyList<string> Skipped { get; }
    /// <summary>Methods that cannot run on this pool: they merge task vectors, and it has no pre-trained base to take them from.</summary>
    public IReadOnlyList<string> NeedBase { get; init; } = [];
    /// <summary>The best task-agnostic entry (or the best of all when every method needs the task at inference).</summary>
    public LeaderboardEntry? Best => Entries.Count > 0 ? Entries[0] : null;

    /// <summary>The rank of entry <paramref name="index"/> within its group (task-agnostic, or task known at inference).</summary>
    public int RankOf(int index) => 1 + Entries.Take(index).Count(e => e.NeedsTaskAtInference == Entries[index].NeedsTaskAtInference);

    private static string F(double v, string format = "F4") => v.ToString(format, CultureInfo.InvariantCulture);
    private static string Pct(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture);

    /// <summary>The leaderboard as CSV (<c>leaderboard.csv</c>): one row per entry with rank, setting, test accuracies per task, times, size and latency.</summary>
    public string ToCsv()
    {
        var text = new StringBuilder();
        text.AppendLine("rank,method,candidate,validation_" + Metric.ToString().ToLowerInvariant() + ",test_average,test_normalized,test_worst," +
            string.Join(",", Tasks.Select(t => "test_" + t)) + ",merge_seconds,search_seconds,parameters,model_bytes,latency_ms,candidates_tried,needs_task_at_inference");
        for (int i = 0; i < Entries.Count; i++)
        {
            var e = Entries[i];
            text.AppendLine(string.Join(",", new[]
            {
                RankOf(i).ToString(CultureInfo.InvariantCulture), Csv(e.Method), Csv(e.Candidate), F(e.ValidationScore), F(e.TestAverage),
                F(e.TestNormalized), F(e.TestWorst),
            }.Concat(Tasks.Select(t => F(e.Test.PerTask[t]))).Concat(new[]
            {
                F(e.MergeSeconds, "F2"), F(e.SearchSeconds, "F2"), e.ParameterCount.ToString(CultureInfo.InvariantCulture),
                e.ModelBytes?.ToString(CultureInfo.InvariantCulture) ?? "", e.LatencyMilliseconds is { } l ? F(l, "F3") : "",
                e.CandidatesTried.ToString(CultureInfo.InvariantCulture), e.NeedsTaskAtInference ? "true" : "false",
            })));
        }
        return text.ToString();
    }

    private static string Csv(string value) => value.Contains(',') || value.Contains('"') ? "\"" + value.Replace("\"", "\"\"") + "\"" : value;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The leaderboard as indented JSON (<c>leaderboard.json</c>), each entry with its method and chosen setting.</summary>
    public string ToJson() => JsonSerializer.Serialize(new
    {
        metric = Metric.ToString().ToLowerInvariant(),
        complete = Complete,
        skipped = Skipped,
        need_base = NeedBase,
        tasks = Tasks,
        individual = Individual,
        entries = Entries.Select((e, i) => new
        {
            rank = RankOf(i),
            needs_task_at_inference = e.NeedsTaskAtInference,
            method = e.Method,
            candidate = e.Candidate,
            setting = e.Setting is { } setting ? new { method = setting.Method, parameters = setting.Parameters } : null,
            validation_score = e.ValidationScore,
            test = e.Test.PerTask,
            test_average = e.TestAverage,
            test_normalized = e.TestNormalized,
            test_worst = e.TestWorst,
            merge_seconds = e.MergeSeconds,
            search_seconds = e.SearchSeconds,
            parameters = e.ParameterCount,
            model_bytes = e.ModelBytes,
            latency_ms = e.LatencyMilliseconds,
            candidates_tried = e.CandidatesTried,
            note = e.Note,
            pool = e.Pool,
        }),
    }, JsonOptions);

    /// <summary>
    /// The chosen setting of the best entry of a <c>leaderboard.json</c>, to build that model again (e.g. with
    /// <c>MergeExperts</c>); null when the leaderboard has no entry.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a leaderboard or its best entry records no setting.</exception>
    public static MergeCandidate? ReadBestSetting(string jsonPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(jsonPath);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(jsonPath));
            if (!document.RootElement.TryGetProperty("entries", out var entries) || entries.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{jsonPath} is not a leaderboard: it has no 'entries' array.");
            if (entries.GetArrayLength() == 0) return null;
            if (!entries[0].TryGetProperty("setting", out var setting) || setting.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{jsonPath}: the best entry records no 'setting' (written by an older mlmerge compare?).");
            var parameters = setting.GetProperty("parameters").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "", StringComparer.Ordinal);
            return new MergeCandidate(setting.GetProperty("method").GetString() ?? "", parameters);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new InvalidDataException($"{jsonPath} is not a readable leaderboard: {e.Message}", e);
        }
    }

    /// <summary>
    /// One leaderboard over several pools of the same tasks (e.g. full, LoRA and L-LoRA experts of one zoo): every entry
    /// keeps its scores, normalised by its own pool's experts, is named <c>method @pool</c>, and all are ranked together by
    /// the validation metric.
    /// </summary>
    /// <exception cref="ArgumentException">The pools' tasks or metrics differ, or two pools have one label.</exception>
    public static Leaderboard Combine(IReadOnlyList<(string Pool, Leaderboard Board)> boards)
    {
        ArgumentNullException.ThrowIfNull(boards);
        if (boards.Count == 0) throw new ArgumentException("No leaderboard to combine.", nameof(boards));
        var first = boards[0].Board;
        foreach (var (pool, board) in boards)
        {
            if (!board.Tasks.SequenceEqual(first.Tasks, StringComparer.Ordinal))
                throw new ArgumentException($"Pool '{pool}' has tasks [{string.Join(", ", board.Tasks)}]; '{boards[0].Pool}' has [{string.Join(", ", first.Tasks)}]: compare pools of the same tasks.");
            if (board.Metric != first.Metric) throw new ArgumentException("The leaderboards rank by different metrics.");
        }

        if (boards.GroupBy(b => b.Pool, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"Two pools are labelled '{twice.Key}'.");
        var entries = boards.SelectMany(b => b.Board.Entries.Select(e => e with { Method = $"{e.Method} @{b.Pool}", Pool = b.Pool }));
        return new Leaderboard(first.Tasks, first.Individual, first.Metric, entries, boards.All(b => b.Board.Complete),
            [.. boards.SelectMany(b => b.Board.Skipped.Select(s => $"{s} @{b.Pool}"))])
        {
            NeedBase = [.. boards.SelectMany(b => b.Board.NeedBase.Select(s => $"{s} @{b.Pool}"))],
            IndividualByPool = boards.ToDictionary(b => b.Pool, b => b.Board.Individual, StringComparer.Ordinal),
        };
    }

    /// <summary>The leaderboard as a console table.</summary>
    public string ToText()
    {
        var text = new StringBuilder();
        // The method column fits the longest name (a leaderboard over several pools adds " @pool").
        int width = Math.Max(18, Entries.Select(e => e.Method.Length).DefaultIfEmpty(0).Max());
        text.AppendLine(CultureInfo.InvariantCulture, $"{"#",2} {"method".PadRight(width)} {"val " + Metric.ToString().ToLowerInvariant(),12} {"test avg",9} {"test norm",9} {"worst",6} {"params",9} {"onnx MB",8} {"ms/img",7}  setting");
        for (int i = 0; i < Entries.Count; i++)
        {
            var e = Entries[i];
            if (e.NeedsTaskAtInference && (i == 0 || !Entries[i - 1].NeedsTaskAtInference))
                text.AppendLine("   needs the task at inference (one model per task), ranked apart:");
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{RankOf(i),2} {e.Method.PadRight(width)} {Pct(e.ValidationScore),12} {Pct(e.TestAverage),9} {Pct(e.TestNormalized),9} {Pct(e.TestWorst),6} {e.ParameterCount,9:N0} {(e.ModelBytes is { } b ? F(b / 1048576.0, "F2") : "-"),8} {(e.LatencyMilliseconds is { } l ? F(l, "F2") : "-"),7}  {e.Candidate}");
        }
        if (!Complete) text.AppendLine($"stopped early; not run: {string.Join(", ", Skipped)}");
        if (NeedBase.Count > 0) text.AppendLine($"not applicable, the pool has no pre-trained base: {string.Join(", ", NeedBase)}");
        return text.ToString();
    }

    /// <summary>
    /// Two sentences, from the figures alone, on why the first of the methods that need no task at inference wins: its margin
    /// on validation and what it keeps of the experts; the tasks its lead over the runner-up comes from, and what it uses that
    /// weight-only methods do not. Empty when nothing is ranked.
    /// </summary>
    public string WhyTheWinnerWins()
    {
        var ranked = Entries.Where(e => !e.NeedsTaskAtInference).ToList();
        if (ranked.Count == 0) return "";
        var winner = ranked[0];
        if (ranked.Count == 1)
            return $"**{winner.Method}** is the only method ranked; it keeps {Pct(winner.TestNormalized)}% of the experts' accuracy on the test split.";
        var second = ranked[1];
        // Equal validation scores are a tie, listed by method name: "0.0 points above" would claim a lead.
        var tied = ranked.Where(e => Math.Abs(e.ValidationScore - winner.ValidationScore) < 1e-12).Select(e => e.Method).ToList();
        string first = tied.Count > 1
            ? $"**{winner.Method}** is level with {string.Join(", ", tied.Skip(1))} on validation ({Pct(winner.ValidationScore)}%; listed first by name), " +
              $"and keeps {Pct(winner.TestNormalized)}% of the experts' accuracy on the test split."
            : $"**{winner.Method}** ranks first on validation ({Pct(winner.ValidationScore)}%), {F(100 * (winner.ValidationScore - second.ValidationScore), "F1")} " +
              $"points above {second.Method}, and keeps {Pct(winner.TestNormalized)}% of the experts' accuracy on the test split.";
        var gains = Tasks.Where(t => winner.Test.PerTask.ContainsKey(t) && second.Test.PerTask.ContainsKey(t))
            .Select(t => (Task: t, Gain: winner.Test.PerTask[t] - second.Test.PerTask[t])).OrderByDescending(g => g.Gain).ToList();
        var leads = gains.Where(g => g.Gain > 0).Take(2).Select(g => $"{g.Task} (+{F(100 * g.Gain, "F1")})").ToList();
        string from = leads.Count == 0
            ? $"It is level with {second.Method} task by task on the test split"
            : $"Its lead over {second.Method} comes from {string.Join(" and ", leads)} on the test split";
        string algorithm = winner.Method.Split(" @")[0];
        var needs = Algorithms.MergeAlgorithmRegistry.Default.TryGet(algorithm, out var found) ? found.Needs : Algorithms.AlgorithmNeeds.None;
        string uses = needs.HasFlag(Algorithms.AlgorithmNeeds.LabeledData)
            ? "it is fitted on labeled training examples of every task, which the weight-only methods never see"
            : needs.HasFlag(Algorithms.AlgorithmNeeds.UnlabeledImages)
                ? "it adapts to the unlabeled test images of every task"
                : "it uses the experts' weights alone";
        return $"{first} {from}; {uses}.";
    }

    /// <summary>report.md: the leaderboard, the per-task table (FusionBench layout) and the charts.</summary>
    public string ToMarkdown(IEnumerable<string> chartFiles)
    {
        var text = new StringBuilder();
        text.AppendLine("# Merge strategy comparison");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Ranked by **{Metric.ToString().ToLowerInvariant()}** accuracy on the validation split (where each method's hyperparameters were chosen); the test split is reported.");
        if (!Complete) text.AppendLine().AppendLine($"The experiment stopped early (time budget or cancellation); not run: {string.Join(", ", Skipped)}.");
        if (NeedBase.Count > 0) text.AppendLine().AppendLine($"Not applicable, because the pool has no pre-trained base to take task vectors from: {string.Join(", ", NeedBase)}.");
        if (WhyTheWinnerWins() is { Length: > 0 } why) text.AppendLine().AppendLine(why);
        text.AppendLine();
        for (int i = 0; i < Entries.Count; i++)
        {
            var e = Entries[i];
            if (i == 0 || e.NeedsTaskAtInference != Entries[i - 1].NeedsTaskAtInference)
            {
                if (e.NeedsTaskAtInference)
                    text.AppendLine().AppendLine("Methods that need the task of each input at inference (one model per task) answer an easier question, so they are ranked apart:").AppendLine();
                text.AppendLine("| rank | method | setting | validation | test avg | test norm. | worst task | parameters | ONNX size | latency (ms/image) | merge time (s) | search time (s) |");
                text.AppendLine("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            }

            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {RankOf(i)} | {e.Method}{(e.NeedsTaskAtInference ? " †" : "")} | `{e.Candidate}` | {Pct(e.ValidationScore)} | {Pct(e.TestAverage)} | {Pct(e.TestNormalized)} | {Pct(e.TestWorst)} | {e.ParameterCount:N0} | {(e.ModelBytes is { } b ? F(b / 1048576.0, "F2") + " MB" : "-")} | {(e.LatencyMilliseconds is { } l ? F(l, "F2") : "-")} | {F(e.MergeSeconds, "F1")} | {F(e.SearchSeconds, "F1")} |");
        }
        // What the table cannot show: a search the budget cut short, a model the budget left unmeasured.
        var cut = Entries.Where(e => e.Note.Contains("stopped after", StringComparison.Ordinal) || e.Note.Contains("not measured", StringComparison.Ordinal)).ToList();
        if (cut.Count > 0)
        {
            text.AppendLine();
            foreach (var e in cut) text.AppendLine($"- {e.Method}: {e.Note}.");
        }
        text.AppendLine();
        text.AppendLine("## Test accuracy per task");
        text.AppendLine();
        // Over several pools, one table per pool: each normalised by its own experts.
        var groups = IndividualByPool.Count == 0
            ? [(Pool: (string?)null, Individual)]
            : IndividualByPool.Select(kv => (Pool: (string?)kv.Key, Individual: kv.Value)).ToList();
        foreach (var (pool, individual) in groups)
        {
            if (pool is not null) text.AppendLine().AppendLine($"Pool `{pool}`:").AppendLine();
            var table = new AccuracyTable(Tasks, individual);
            table.Add("Individual", new Pools.TaskAccuracies(individual));
            foreach (var e in Entries.Where(e => e.Pool == pool))
                table.Add(e.NeedsTaskAtInference ? e.Method + " †" : e.Method, e.Test, e.CandidatesTried > 1 ? e.Candidate : "");
            text.Append(table.ToMarkdown());
        }
        if (Entries.Any(e => e.NeedsTaskAtInference)) text.AppendLine().AppendLine("† needs the task of each input at inference.");
        foreach (var chart in chartFiles)
            text.AppendLine().AppendLine($"![{Path.GetFileNameWithoutExtension(chart)}]({Path.GetFileName(chart)})");
        return text.ToString();
    }

    /// <summary>Writes leaderboard.csv, leaderboard.json, report.md and the charts into <paramref name="directory"/>; returns the files.</summary>
    public IReadOnlyList<string> WriteAll(string directory)
    {
        Directory.CreateDirectory(directory);
        // The figures first: a chart that cannot be drawn (no chart font installed) leaves them written.
        var files = new List<string>
        {
            WriteAtomically(Path.Combine(directory, "leaderboard.csv"), ToCsv()),
            WriteAtomically(Path.Combine(directory, "leaderboard.json"), ToJson()),
        };
        var charts = LeaderboardCharts.Write(this, directory);
        files.Add(WriteAtomically(Path.Combine(directory, "report.md"), ToMarkdown(charts)));
        files.AddRange(charts);
        return files;
    }

    private static string WriteAtomically(string path, string content)
    {
        File.WriteAllText(path + ".partial", content);
        File.Move(path + ".partial", path, overwrite: true);
        return path;
    }
}
