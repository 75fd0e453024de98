using Microsoft.ML.ModelMerging.Experiments.Charts;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>The comparison's PNG charts: per-task test accuracy grouped by method, and accuracy against model size and latency.</summary>
internal static class LeaderboardCharts
{
    public static IReadOnlyList<string> Write(Leaderboard leaderboard, string directory)
    {
        var files = new List<string>();
        if (leaderboard.Entries.Count == 0) return files;
        files.Add(PerTask(leaderboard, Path.Combine(directory, "accuracy-per-task.png")));
        if (leaderboard.Entries.Any(e => e.ModelBytes is not null))
            files.Add(Versus(leaderboard, "Accuracy against model size", "ONNX model size (MB)", e => e.ModelBytes is { } b ? b / 1048576.0 : null, Path.Combine(directory, "accuracy-vs-size.png")));
        if (leaderboard.Entries.Any(e => e.LatencyMilliseconds is not null))
            files.Add(Versus(leaderboard, "Accuracy against latency", "ONNX Runtime latency (ms / image, batch 1)", e => e.LatencyMilliseconds, Path.Combine(directory, "accuracy-vs-latency.png")));
        return files;
    }

    private static string PerTask(Leaderboard leaderboard, string path)
    {
        int methods = leaderboard.Entries.Count, tasks = leaderboard.Tasks.Count;
        using var chart = new ChartCanvas(Math.Max(900, 150 * tasks + 260), 520, (-0.5, tasks - 0.5), (0, 100), legendWidth: 240);
        chart.NumericYAxis();
        // Each task gets a group of bars, one per method, filling 80% of the task's slot.
        double width = 0.8 / methods;
        for (int m = 0; m < methods; m++)
        {
            var entry = leaderboard.Entries[m];
            for (int t = 0; t < tasks; t++)
                chart.Bar(t - 0.4 + width * (m + 0.5), width * 0.9, 100 * entry.Test.PerTask[leaderboard.Tasks[t]], ChartCanvas.Color(m));
        }

        chart.CategoryXAxis(Enumerable.Range(0, tasks).Select(i => (double)i).ToArray(), leaderboard.Tasks.ToArray());
        chart.Title("Per-task test accuracy by merge method", "task", "test accuracy (%)");
        chart.Legend(leaderboard.Entries.Select((e, m) => (e.Method, ChartCanvas.Color(m))).ToArray());
        return chart.Save(path);
    }

    private static string Versus(Leaderboard leaderboard, string title, string xLabel, Func<LeaderboardEntry, double?> x, string path)
    {
        var points = leaderboard.Entries.Select((e, m) => (Entry: e, Index: m, X: x(e)))
            .Where(p => p.X is not null).Select(p => (p.Entry, p.Index, X: p.X!.Value, Y: 100 * p.Entry.TestAverage)).ToArray();
        using var chart = new ChartCanvas(900, 520, ChartCanvas.Padded(points.Select(p => p.X), 0.15), ChartCanvas.Padded(points.Select(p => p.Y), 0.15), legendWidth: 240);
        chart.NumericXAxis();
        chart.NumericYAxis();
        foreach (var p in points) chart.Marker(p.X, p.Y, ChartCanvas.Color(p.Index));
        chart.Title(title, xLabel, "average test accuracy (%)");
        chart.Legend(points.Select(p => (p.Entry.Method, ChartCanvas.Color(p.Index))).ToArray());
        return chart.Save(path);
    }
}
