using Microsoft.ML.ModelMerging.Algorithms;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.Experiments;

[TestClass]
public sealed class MergeExperimentTests
{
    private static readonly string[] TwoTasks = { "optical-digits", "glyph-digits" };

    private static MergeExperimentOptions Short(RankingMetric metric = RankingMetric.Average) => new()
    {
        Metric = metric,
        Searches = new[]
        {
            new MergeMethodSearch("simple-average", new[] { new MergeCandidate("simple-average") }),
            new MergeMethodSearch("task-arithmetic", MergeCandidate.Grid("task-arithmetic", new Dictionary<string, double[]> { ["lambda"] = new[] { 0.1, 0.5, 1.0 } })),
            new MergeMethodSearch("ties", MergeCandidate.Grid("ties", new Dictionary<string, double[]> { ["lambda"] = new[] { 0.5 }, ["keep"] = new[] { 0.2 } })),
        },
        LatencyRuns = 3,
    };

    [TestMethod]
    public void EntriesAreRankedAndTheirNumbersMatchAnIndependentEvaluation()
    {
        const RankingMetric metric = RankingMetric.Worst;
        using var experts = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var leaderboard = new MergeExperiment(experts, Short(metric)).Run();

        Assert.IsTrue(leaderboard.Complete);
        Assert.HasCount(3, leaderboard.Entries);
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Validation);
        for (int i = 1; i < leaderboard.Entries.Count; i++)
            Assert.IsGreaterThanOrEqualTo(leaderboard.Entries[i].ValidationScore, leaderboard.Entries[i - 1].ValidationScore, "ranked by the metric on validation");

        foreach (var entry in leaderboard.Entries)
        {
            // Re-merge the chosen setting independently of the experiment and evaluate it with TaskAccuracy.
            var candidate = Short(metric).Searches.Single(s => s.Method == entry.Method).Candidates.Single(c => c.ToString() == entry.Candidate);
            using var merged = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(candidate.Method, new MergeParameters(candidate.Parameters)),
                experts.Pretrained, experts.Experts);
            var test = TaskAccuracy.Evaluate(experts, experts.Config, merged.Merged, EvaluationSplit.Test);
            var validation = TaskAccuracy.Evaluate(experts, experts.Config, merged.Merged, EvaluationSplit.Validation);
            foreach (var task in TwoTasks) Assert.AreEqual(test.PerTask[task], entry.Test.PerTask[task], 1e-12, $"{entry.Method} {task}");
            Assert.AreEqual(metric.Score(validation, individual), entry.ValidationScore, 1e-12);
            Assert.IsGreaterThan(0L, entry.ModelBytes ?? 0);
            Assert.IsGreaterThan(0.0, entry.LatencyMilliseconds ?? 0);
        }
        var ta = leaderboard.Entries.Single(e => e.Method == "task-arithmetic");
        Assert.AreEqual(3, ta.CandidatesTried);
    }

    [TestMethod]
    public void MetricsScoreAsDefined()
    {
        var accuracies = new TaskAccuracies(new Dictionary<string, double> { ["a"] = 0.5, ["b"] = 0.9 });
        var individual = new Dictionary<string, double> { ["a"] = 1.0, ["b"] = 0.9 };
        Assert.AreEqual(0.7, RankingMetric.Average.Score(accuracies, individual), 1e-12);
        Assert.AreEqual(0.75, RankingMetric.Normalized.Score(accuracies, individual), 1e-12);
        Assert.AreEqual(0.5, RankingMetric.Worst.Score(accuracies, individual), 1e-12);
    }

    [TestMethod]
    public void BudgetStopsStartingNewCandidates()
    {
        using var experts = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var nothing = new MergeExperiment(experts, Short() with { TimeBudget = TimeSpan.Zero }).Run();
        Assert.IsFalse(nothing.Complete);
        Assert.IsEmpty(nothing.Entries);
        CollectionAssert.AreEqual(new[] { "simple-average", "task-arithmetic", "ties" }, nothing.Skipped.ToArray());

        // A budget that runs out after the first candidate: the first method finishes, nothing new starts.
        var started = new List<string>();
        var clockStop = new SynchronousProgress<MergeExperimentProgress>(p => { if (p.Finished is null) started.Add(p.Method); });
        var options = Short() with { TimeBudget = TimeSpan.FromTicks(1), MeasureOnnx = false };
        var one = new MergeExperiment(experts, options with { Searches = options.Searches }).Run(clockStop);
        Assert.IsLessThanOrEqualTo(1, started.Count);
        Assert.IsFalse(one.Complete);
    }

    [TestMethod]
    public void CancellationLeavesAValidPartialLeaderboard()
    {
        using var dir = new TempDirectory();
        using var experts = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var cancel = new CancellationTokenSource();
        var progress = new SynchronousProgress<MergeExperimentProgress>(p => { if (p.Finished?.Method == "simple-average") cancel.Cancel(); });
        var leaderboard = new MergeExperiment(experts, Short() with { MeasureOnnx = false }).Run(progress, cancel.Token);
        Assert.IsFalse(leaderboard.Complete);
        CollectionAssert.AreEqual(new[] { "simple-average" }, leaderboard.Entries.Select(e => e.Method).ToArray());
        CollectionAssert.AreEqual(new[] { "task-arithmetic", "ties" }, leaderboard.Skipped.ToArray());
        var files = leaderboard.WriteAll(dir.Path);
        using var json = JsonDocument.Parse(File.ReadAllText(dir.File("leaderboard.json")));
        Assert.IsFalse(json.RootElement.GetProperty("complete").GetBoolean());
        Assert.AreEqual(1, json.RootElement.GetProperty("entries").GetArrayLength());
        StringAssert.Contains(File.ReadAllText(dir.File("report.md")), "stopped early");
        Assert.IsNotEmpty(files);
    }

    [TestMethod]
    public void ProgressCarriesThePartialLeaderboardAndTheStepsInsideAdaptiveMethods()
    {
        using var experts = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var reports = new List<MergeExperimentProgress>();
        var options = new MergeExperimentOptions { Searches = MergeMethodSearch.For(["simple-average", "adamerging-task"], adaptationSteps: 2), MeasureOnnx = false };
        var leaderboard = new MergeExperiment(experts, options).Run(new SynchronousProgress<MergeExperimentProgress>(reports.Add));
        var partials = reports.Where(r => r.Partial is not null).ToList();
        Assert.HasCount(2, partials);
        Assert.HasCount(1, partials[0].Partial!.Entries);
        Assert.IsFalse(partials[0].Partial!.Complete);
        CollectionAssert.AreEqual(new[] { "adamerging-task" }, partials[0].Partial!.Skipped.ToArray(), "not yet run");
        Assert.HasCount(2, partials[1].Partial!.Entries);
        var steps = reports.Where(r => r.Inner is { Stage: "adapting" }).Select(r => r.Inner!.Done).ToList();
        CollectionAssert.AreEqual(new long[] { 1, 2 }, steps, "every adaptation step is reported");
        Assert.IsTrue(leaderboard.Complete);
    }

    [TestMethod]
    public void CompareCommandWritesFilesThatParse()
    {
        using var dir = new TempDirectory();
        var (exit, output, error) = CliRunner.Run("compare", "--zoo", CommittedZoo.Directory, "--task", "optical-digits", "--task", "glyph-digits",
            "--methods", "simple-average,emr", "--metric", "normalized", "--out", dir.Path);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "emr");
        StringAssert.Contains(output, "report.md");

        var csv = File.ReadAllLines(dir.File("leaderboard.csv"));
        Assert.HasCount(3, csv);
        StringAssert.StartsWith(csv[0], "rank,method,candidate,validation_normalized,test_average");
        using var json = JsonDocument.Parse(File.ReadAllText(dir.File("leaderboard.json")));
        Assert.AreEqual("normalized", json.RootElement.GetProperty("metric").GetString());
        var entries = json.RootElement.GetProperty("entries").EnumerateArray().ToList();
        Assert.HasCount(2, entries);
        Assert.AreEqual(csv[1].Split(',')[1], entries[0].GetProperty("method").GetString(), "CSV and JSON agree on the ranking");
        // EMR needs the task at inference: ranked apart, after the task-agnostic methods, whatever its score.
        Assert.AreEqual("simple-average", entries[0].GetProperty("method").GetString());
        Assert.IsFalse(entries[0].GetProperty("needs_task_at_inference").GetBoolean());
        Assert.AreEqual("emr", entries[1].GetProperty("method").GetString());
        Assert.IsTrue(entries[1].GetProperty("needs_task_at_inference").GetBoolean());
        Assert.AreEqual(1, entries[1].GetProperty("rank").GetInt32(), "first of its own group");
        StringAssert.EndsWith(csv[2], ",true");
        StringAssert.Contains(File.ReadAllText(dir.File("report.md")), "ranked apart");
        foreach (var entry in entries)
            Assert.IsLessThanOrEqualTo(entry.GetProperty("search_seconds").GetDouble(), entry.GetProperty("merge_seconds").GetDouble(), "the merge alone is part of the search");
        foreach (var png in new[] { "accuracy-per-task.png", "accuracy-vs-size.png", "accuracy-vs-latency.png" })
        {
            var bytes = File.ReadAllBytes(dir.File(png));
            CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes.Take(4).ToArray(), png);
            StringAssert.Contains(File.ReadAllText(dir.File("report.md")), $"({png})");
        }

        // The per-task chart has bars of the first method in the palette's first colour, and a title: dark pixels above the
        // plot area's frame (which starts at y = 45).
        using var chart = SkiaSharp.SKBitmap.Decode(dir.File("accuracy-per-task.png"));
        Assert.IsGreaterThan(500, chart.Pixels.Count(p => p == new SkiaSharp.SKColor(0x1f, 0x77, 0xb4)), "bars of the first method");
        int title = 0;
        for (int y = 0; y < 40; y++)
            for (int x = 0; x < chart.Width; x++)
                if (chart.GetPixel(x, y) is { Red: < 100, Green: < 100, Blue: < 100 }) title++;
        Assert.IsGreaterThan(100, title, "the title is drawn");
    }

    [TestMethod]
    public void AdaptiveMethodsRankBesideStaticOnesAndTheirNumbersMatchTheSameAdaptation()
    {
        using var experts = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        int threads = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        try
        {
            AdaptiveRunsMatchMergeExperts(experts);
        }
        finally
        {
            TorchSharp.torch.set_num_threads(threads);
        }
    }

    private sealed class TaskImage
    {
        public float[] Pixels { get; set; } = [];
        public string Task { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private static void AdaptiveRunsMatchMergeExperts(ExpertPool experts)
    {
        var options = new MergeExperimentOptions
        {
            Searches = MergeMethodSearch.For(["task-arithmetic", "adamerging-layer", "wemoe"], adaptationSteps: 3),
            LatencyRuns = 3,
        };
        var leaderboard = new MergeExperiment(experts, options).Run();

        Assert.IsTrue(leaderboard.Complete);
        Assert.HasCount(3, leaderboard.Entries);
        foreach (string method in new[] { "adamerging-layer", "wemoe" })
        {
            var entry = leaderboard.Entries.Single(e => e.Method == method);
            // One of the method's comparison settings (WEMoE has two: the paper's, and softmax routing with the task-routing term).
            var tried = MergeMethodSearch.For([method], adaptationSteps: 3).Single().Candidates.Select(c => c.ToString()).ToArray();
            Assert.HasCount(method == "wemoe" ? 2 : 1, tried);
            Assert.IsTrue(tried.All(c => c.Contains("steps=3", StringComparison.Ordinal)), string.Join("; ", tried));
            CollectionAssert.Contains(tried, entry.Setting!.ToString());
            StringAssert.Contains(entry.Note, "adapted on the unlabeled test images");

            // MergeExperts fitted on the same unlabeled test images (an ML.NET pipeline, scored through ONNX Runtime) predicts
            // the labels the leaderboard counted.
            var ml = new MLContext(seed: 1);
            var rows = TwoTasks.SelectMany(t =>
            {
                var data = experts.LoadData(t).Test;
                return Enumerable.Range(0, data.Count).Select(i => new TaskImage { Pixels = data.Image(i).ToArray(), Task = t, Label = data.ClassNames[data.Labels.Span[i]] });
            }).ToList();
            var schema = SchemaDefinition.Create(typeof(TaskImage));
            schema[nameof(TaskImage.Pixels)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 784);
            var view = ml.Data.LoadFromEnumerable(rows, schema);
            using var model = ml.Transforms.MergeExperts(experts, entry.Setting,
                new MergeExpertsOptions { InputColumnName = nameof(TaskImage.Pixels), InputRange = PixelRange.Unit, TaskColumnName = nameof(TaskImage.Task) }).Fit(view);
            var scored = model.Transform(view);
            foreach (var task in TwoTasks)
            {
                var predicted = scored.GetColumn<string>($"PredictedLabel_{task}").ToArray();
                var own = rows.Select((r, i) => (r, i)).Where(x => x.r.Task == task).ToList();
                double accuracy = own.Average(x => predicted[x.i] == x.r.Label ? 1.0 : 0.0);
                // ONNX Runtime and TorchSharp round differently: one image near a decision boundary may flip.
                Assert.AreEqual(accuracy, entry.Test.PerTask[task], 1.0 / own.Count + 1e-12, $"{method} {task}");
            }
        }

        var dense = leaderboard.Entries.Single(e => e.Method == "task-arithmetic");
        var wemoe = leaderboard.Entries.Single(e => e.Method == "wemoe");
        Assert.IsGreaterThan(dense.ModelBytes!.Value, wemoe.ModelBytes!.Value, "the upscaled model is larger");
        // The upscaled model holds the shared weights, one MLP task vector per expert and block, and the routers.
        var config = experts.Config;
        long mlp = config.Layers * (2L * config.Width * config.MlpSize + config.MlpSize + config.Width);
        Assert.IsGreaterThan(dense.ParameterCount + TwoTasks.Length * mlp, wemoe.ParameterCount);

        // The best entry's setting survives leaderboard.json, ready for MergeExperts.
        using var dir = new TempDirectory();
        leaderboard.WriteAll(dir.Path);
        Assert.AreEqual(leaderboard.Best!.Setting!.ToString(), Leaderboard.ReadBestSetting(dir.File("leaderboard.json"))!.ToString());
    }

    [TestMethod]
    public void BadOptionsAreOneClearLine()
    {
        using var dir = new TempDirectory();
        var (exit, _, error) = CliRunner.Run("compare", "--zoo", CommittedZoo.Directory, "--methods", "magic", "--out", dir.Path);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "Unknown merge method 'magic' (known: simple-average");
        (exit, _, error) = CliRunner.Run("compare", "--zoo", CommittedZoo.Directory, "--time-budget", "soon", "--out", dir.Path);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "Cannot read duration 'soon'");
    }
}
