using Microsoft.ML.ModelMerging.Experiments.Charts;
using ScottPlot;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>The comparison's PNG charts: per-task test accuracy grouped by method, and accuracy against model size and latency.</summary>
internal static class LeaderboardCharts
{
    public const int Height = 520;

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

    /// <summary>The per-task chart's width: 150 pixels a task beside the legend, at least 900.</summary>
    public static int PerTaskWidth(int tasks) => Math.Max(900, 150 * tasks + 260);

    private static string PerTask(Leaderboard leaderboard, string path)
    {
        int methods = leaderboard.Entries.Count, tasks = leaderboard.Tasks.Count;
        using var plot = new Plot();
        // Each task gets a group of bars, one per method, filling 80% of the task's slot.
        double width = 0.8 / methods;
        for (int m = 0; m < methods; m++)
        {
            var entry = leaderboard.Entries[m];
            var bars = Enumerable.Range(0, tasks).Select(t => new Bar
            {
                Position = t - 0.4 + width * (m + 0.5),
                Value = 100 * entry.Test.PerTask[leaderboard.Tasks[t]],
                Size = width * 0.9,
                FillColor = Chart.Color(m),
                LineWidth = 0,
            }).ToArray();
            plot.Add.Bars(bars).LegendText = entry.Method;
        }

        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, tasks).Select(i => (double)i).ToArray(), leaderboard.Tasks.ToArray());
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.SetLimits(-0.5, tasks - 0.5, 0, 100);
        Label(plot, "Per-task test accuracy by merge method", "task", "test accuracy (%)");
        return Chart.SavePng(plot, PerTaskWidth(tasks), Height, path);
    }

    private static string Versus(Leaderboard leaderboard, string title, string xLabel, Func<LeaderboardEntry, double?> x, string path)
    {
        var points = leaderboard.Entries.Select((e, m) => (Entry: e, Index: m, X: x(e)))
            .Where(p => p.X is not null).Select(p => (p.Entry, p.Index, X: p.X!.Value, Y: 100 * p.Entry.TestAverage)).ToArray();
        using var plot = new Plot();
        foreach (var p in points)
        {
            var marker = plot.Add.Marker(p.X, p.Y, MarkerShape.FilledCircle, 12, Chart.Color(p.Index));
            marker.LegendText = p.Entry.Method;
        }

        var (xMin, xMax) = Padded(points.Select(p => p.X), 0.15);
        var (yMin, yMax) = Padded(points.Select(p => p.Y), 0.15);
        plot.Axes.SetLimits(xMin, xMax, yMin, yMax);
        Label(plot, title, xLabel, "average test accuracy (%)");
        return Chart.SavePng(plot, 900, Height, path);
    }

    /// <summary>Title, axis labels, and the legend in a column right of the plot area, at its top.</summary>
    private static void Label(Plot plot, string title, string xLabel, string yLabel)
    {
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Right).Alignment = ScottPlot.Alignment.UpperCenter;
    }

    /// <summary>A range around <paramref name="values"/> with <paramref name="margin"/> of its span added on each side.</summary>
    internal static (double Min, double Max) Padded(IEnumerable<double> values, double margin)
    {
        double min = values.Min(), max = values.Max();
        double span = max - min;
        double pad = span > 0 ? span * margin : Math.Max(Math.Abs(max) * margin, 1);
        return (min - pad, max + pad);
    }
}
