using System.Text.Json;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Zoo;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>TACT in a comparison: one setting (no steps to shorten), ranked with the methods that need the task at inference.</summary>
[TestClass]
public sealed class TactCompareTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void SearchesGiveStepsOnlyToAlgorithmsThatAdaptInSteps()
    {
        var tact = MergeMethodSearch.Of(TactAlgorithm.Instance, adaptationSteps: 5);
        Assert.AreEqual("tact", tact.Method);
        CollectionAssert.AreEqual(new[] { "channel", "token" }, tact.Candidates.Select(c => c.Parameters["statistics"]).ToArray(),
            "validation chooses the granularity");
        Assert.IsTrue(tact.Candidates.All(c => c.Parameters.Count == 1), "nothing else set; it has no steps");
        Assert.IsTrue(MergeMethodSearch.Of(MergeAlgorithmRegistry.Default.Get("wemoe"), adaptationSteps: 5).Candidates.All(c => c.Parameters["steps"] == "5"));
        Assert.AreEqual("5", MergeMethodSearch.Of(MergeAlgorithmRegistry.Default.Get("adamerging-layer"), adaptationSteps: 5).Candidates.Single().Parameters["steps"]);

        // Every search of every registered algorithm resolves against the algorithm's declared parameters.
        foreach (var search in MergeMethodSearch.Adaptive(5).Concat(MergeMethodSearch.Defaults))
        {
            var algorithm = MergeAlgorithmRegistry.Default.Get(search.Method);
            foreach (var candidate in search.Candidates) new MergeParameters(candidate.Parameters).Resolve(algorithm.Name, algorithm.Parameters);
        }

        CollectionAssert.Contains(MergeMethodSearch.Adaptive(5).Select(s => s.Method).ToArray(), "tact");
        CollectionAssert.Contains(MergeMethodSearch.Defaults.Select(s => s.Method).ToArray(), "tact");
    }

    [TestMethod]
    public void CompareRanksTactWithTheTaskConditionedMethodsAndReportsItsOwnAccuracy()
    {
        using var dir = new TempDirectory();
        var (exit, output, error) = CliRunner.Run("compare", "--zoo", CommittedZoo.Directory, "--task", TwoTasks[0], "--task", TwoTasks[1],
            "--methods", "tact,simple-average", "--out", dir.Path);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "tact: one pass over the unlabeled test images (no steps)");
        Assert.DoesNotContain("adapt for", output, "no method here runs in steps");

        using var json = JsonDocument.Parse(File.ReadAllText(dir.File("leaderboard.json")));
        Assert.IsTrue(json.RootElement.GetProperty("complete").GetBoolean());
        var entries = json.RootElement.GetProperty("entries").EnumerateArray().ToList();
        CollectionAssert.AreEqual(new[] { "simple-average", "tact" }, entries.Select(e => e.GetProperty("method").GetString()).ToArray(),
            "the task-agnostic method first, whatever the scores");
        var tact = entries[1];
        Assert.IsTrue(tact.GetProperty("needs_task_at_inference").GetBoolean());
        Assert.AreEqual(1, tact.GetProperty("rank").GetInt32(), "first of its own group");
        Assert.IsGreaterThan(0L, tact.GetProperty("model_bytes").GetInt64(), "each task's model exported and measured");
        StringAssert.Contains(File.ReadAllText(dir.File("report.md")), "tact †");

        // Its test accuracy is the accuracy of the same run done here: the setting validation chose, on the test images.
        var chosen = tact.GetProperty("setting").GetProperty("parameters").EnumerateObject()
            .Select(p => KeyValuePair.Create(p.Name, p.Value.GetString()!)).ToList();
        CollectionAssert.Contains(new[] { "channel", "token" }, chosen.Single(p => p.Key == "statistics").Value);
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var model = TactAlgorithm.Instance.Run(pool, new MergeParameters(chosen), new AlgorithmContext());
        var test = TaskAccuracy.Evaluate(pool, (task, x) => model.Features(task, x), EvaluationSplit.Test);
        var reported = tact.GetProperty("test");
        foreach (string task in TwoTasks)
        {
            Assert.AreEqual(test.PerTask[task], reported.GetProperty(task).GetDouble(), 1e-12, task);
        }

        // The corrected average does no worse than the average itself on either task, and better on the two together.
        var average = entries[0].GetProperty("test");
        foreach (string task in TwoTasks)
        {
            Assert.IsGreaterThanOrEqualTo(average.GetProperty(task).GetDouble(), reported.GetProperty(task).GetDouble(), task);
        }

        Assert.IsGreaterThan(entries[0].GetProperty("test_average").GetDouble(), tact.GetProperty("test_average").GetDouble());
    }
}
