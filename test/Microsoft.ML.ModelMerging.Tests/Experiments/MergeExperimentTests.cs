using System.Text.Json;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Tests.Zoo;
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
        using var experts = ExpertSet.Load(CommittedZoo.Directory, TwoTasks);
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
        using var experts = ExpertSet.Load(CommittedZoo.Directory, TwoTasks);
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
        using var experts = ExpertSet.Load(CommittedZoo.Directory, TwoTasks);
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
        foreach (var png in new[] { "accuracy-per-task.png", "accuracy-vs-size.png", "accuracy-vs-latency.png" })
        {
            var bytes = File.ReadAllBytes(dir.File(png));
            CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes.Take(4).ToArray(), png);
            StringAssert.Contains(File.ReadAllText(dir.File("report.md")), $"({png})");
        }

        // The per-task chart has a bar of the first method in the palette's first colour, and text (dark pixels) around it.
        using var chart = SkiaSharp.SKBitmap.Decode(dir.File("accuracy-per-task.png"));
        var pixels = chart.Pixels;
        Assert.IsGreaterThan(500, pixels.Count(p => p == new SkiaSharp.SKColor(0x1f, 0x77, 0xb4)), "bars of the first method");
        Assert.IsGreaterThan(500, pixels.Count(p => p.Red < 60 && p.Green < 60 && p.Blue < 60), "axes, labels and title");
    }

    [TestMethod]
    public void AdaptiveMethodsRankBesideStaticOnesAndTheirNumbersMatchTheSameAdaptation()
    {
        using var experts = ExpertSet.Load(CommittedZoo.Directory, TwoTasks);
        TorchSharp.torch.set_num_threads(1);
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
            Assert.AreEqual(new MergeCandidate(method, new Dictionary<string, string> { ["steps"] = "3" }).ToString(), entry.Setting!.ToString());
            StringAssert.Contains(entry.Note, "adapted on the unlabeled test images");

            // The same adaptation, run by the strategy MergeExperts uses, on the same test images.
            var byTask = TwoTasks.ToDictionary(t => t, t => experts.LoadData(t).Test.ToTensor());
            using var images = new UnlabeledImages(TorchSharp.torch.cat(byTask.Values.ToArray(), 0), byTask);
            var strategy = TestTimeAdaptationStrategy.Create(method, entry.Setting.Parameters);
            using var merged = strategy.Merge(new MergeStrategyContext(experts, TwoTasks, new VitOnnxExportOptions(), images));
            var test = TaskAccuracy.Evaluate(experts, merged.Parts[0].Exporter.Features, EvaluationSplit.Test);
            foreach (var task in TwoTasks) Assert.AreEqual(test.PerTask[task], entry.Test.PerTask[task], 1e-12, $"{method} {task}");
        }

        var dense = leaderboard.Entries.Single(e => e.Method == "task-arithmetic");
        Assert.IsGreaterThan(dense.ModelBytes!.Value, leaderboard.Entries.Single(e => e.Method == "wemoe").ModelBytes!.Value, "the upscaled model is larger");

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
        StringAssert.Contains(error, "No comparison search for method 'magic'");
        (exit, _, error) = CliRunner.Run("compare", "--zoo", CommittedZoo.Directory, "--time-budget", "soon", "--out", dir.Path);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "Cannot read duration 'soon'");
    }
}
