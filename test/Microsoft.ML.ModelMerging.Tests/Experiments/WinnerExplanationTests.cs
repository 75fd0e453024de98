using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Tests.Experiments;

/// <summary>The report's two sentences on why the winner wins: its margin, the tasks its lead comes from, what it uses.</summary>
[TestClass]
public sealed class WinnerExplanationTests
{
    private static readonly string[] Tasks = ["digits", "letters", "shapes"];

    private static LeaderboardEntry Entry(string method, double validation, double[] test, bool taskAtInference = false)
    {
        var accuracies = new TaskAccuracies(Tasks.Select((t, i) => (t, test[i])).ToDictionary(p => p.t, p => p.Item2));
        return new LeaderboardEntry
        {
            Method = method, Candidate = method, CandidatesTried = 1, ValidationScore = validation, Test = accuracies, TestAverage = accuracies.Average,
            TestNormalized = accuracies.Average / 0.9, TestWorst = accuracies.Worst, MergeSeconds = 1, ParameterCount = 1000, NeedsTaskAtInference = taskAtInference,
        };
    }

    private static Leaderboard Board(params LeaderboardEntry[] entries) =>
        new(Tasks, Tasks.ToDictionary(t => t, _ => 0.9), RankingMetric.Average, entries, complete: true, skipped: []);

    [TestMethod]
    public void NamesTheMarginTheTasksAndWhatTheWinnerUses()
    {
        var board = Board(
            Entry("tall-masks", 0.85, [0.9, 0.9, 0.9], taskAtInference: true),  // ranked apart: not the winner
            Entry("regmean", 0.62, [0.70, 0.50, 0.66]),
            Entry("ties", 0.60, [0.60, 0.52, 0.63]));
        string why = board.WhyTheWinnerWins();
        Assert.AreEqual(
            "**regmean** ranks first on validation (62.0%), 2.0 points above ties, and keeps 68.9% of the experts' accuracy on the test split. " +
            "Its lead over ties comes from digits (+10.0) and shapes (+3.0) on the test split; it is fitted on labeled training examples of every task, " +
            "which the weight-only methods never see.", why);
        StringAssert.Contains(board.ToMarkdown([]), why);
    }

    [TestMethod]
    public void SaysWhatAnAdaptiveOrAWeightOnlyWinnerUses()
    {
        StringAssert.EndsWith(Board(Entry("wemoe", 0.7, [0.7, 0.7, 0.7]), Entry("ties", 0.6, [0.6, 0.6, 0.6])).WhyTheWinnerWins(),
            "it adapts to the unlabeled test images of every task.");
        string level = Board(Entry("ties", 0.7, [0.6, 0.6, 0.6]), Entry("dare", 0.6, [0.6, 0.6, 0.6])).WhyTheWinnerWins();
        StringAssert.Contains(level, "It is level with dare task by task on the test split; it uses the experts' weights alone.");
        Assert.AreEqual("", Board(Entry("emr", 0.8, [0.8, 0.8, 0.8], taskAtInference: true)).WhyTheWinnerWins());
    }

    [TestMethod]
    public void ATieOnValidationIsCalledOneAndMethodsWithoutABaseAreNotCalledStopped()
    {
        var board = Board(Entry("ties", 0.6, [0.6, 0.6, 0.6]), Entry("dare", 0.6, [0.5, 0.6, 0.6]), Entry("emr", 0.5, [0.5, 0.5, 0.5]));
        StringAssert.StartsWith(board.WhyTheWinnerWins(), "**dare** is level with ties on validation (60.0%; listed first by name), and keeps");
        Assert.DoesNotContain("points above", board.WhyTheWinnerWins());

        var noBase = new Leaderboard(Tasks, Tasks.ToDictionary(t => t, _ => 0.9), RankingMetric.Average, [Entry("simple-average", 0.6, [0.6, 0.6, 0.6])],
            complete: true, skipped: []) { NeedBase = ["task-arithmetic", "ties"] };
        string report = noBase.ToMarkdown([]);
        StringAssert.Contains(report, "Not applicable, because the pool has no pre-trained base to take task vectors from: task-arithmetic, ties.");
        Assert.DoesNotContain("stopped early", report);
        StringAssert.Contains(noBase.ToJson(), "\"need_base\"");

        // A search the budget cut short is said under the table, not only in leaderboard.json.
        var cut = Board(Entry("ties", 0.6, [0.6, 0.6, 0.6]) with { Note = "stopped after 11 of 20 settings; ONNX size and latency not measured: the time budget ran out" });
        StringAssert.Contains(cut.ToMarkdown([]), "- ties: stopped after 11 of 20 settings; ONNX size and latency not measured: the time budget ran out.");
        Assert.DoesNotContain("- ties:", Board(Entry("ties", 0.6, [0.6, 0.6, 0.6])).ToMarkdown([]), "a search that ran whole gets no line");
    }
}
