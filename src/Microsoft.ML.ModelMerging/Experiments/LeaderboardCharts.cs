using ScottPlot;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>The comparison's PNG charts: per-task test accuracy grouped by method, and accuracy against model size and latency.</summary>
public static class LeaderboardCharts
{
    public static IReadOnlyList<string> Write(Leaderboard leaderboard, string directory)
    {
        var files = new List<string>();
        if (leaderboard.Entries.Count == 0) return files;
        files.Add(Save(PerTask(leaderboard), Path.Combine(directory, "accuracy-per-task.png"), 1100, 520));
        if (leaderboard.Entries.Any(e => e.ModelBytes is not null))
            files.Add(Save(Versus(leaderboard, "Accuracy against model size", "ONNX model size (MB)", e => e.ModelBytes is { } b ? b / 1048576.0 : null), Path.Combine(directory, "accuracy-vs-size.png"), 800, 520));
        if (leaderboard.Entries.Any(e => e.LatencyMilliseconds is not null))
            files.Add(Save(Versus(leaderboard, "Accuracy against latency", "ONNX Runtime latency (ms / image, batch 1)", e => e.LatencyMilliseconds), Path.Combine(directory, "accuracy-vs-latency.png"), 800, 520));
        return files;
    }

    private static string Save(Plot plot, string path, int width, int height)
    {
        string temp = path + ".partial.png";
        plot.SavePng(temp, width, height);
        File.Move(temp, path, overwrite: true);
        return path;
    }

    private static Plot PerTask(Leaderboard leaderboard)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int methods = leaderboard.Entries.Count;
        double width = 0.8 / methods;
        var bars = new List<Bar>();
        for (int m = 0; m < methods; m++)
        {
            var entry = leaderboard.Entries[m];
            for (int t = 0; t < leaderboard.Tasks.Count; t++)
                bars.Add(new Bar
                {
                    Position = t - 0.4 + width * (m + 0.5),
                    Value = 100 * entry.Test.PerTask[leaderboard.Tasks[t]],
                    Size = width * 0.9,
                    FillColor = palette.GetColor(m),
                    LineWidth = 0,
                });
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = entry.Method, FillColor = palette.GetColor(m) });
        }
        plot.Add.Bars(bars);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            Enumerable.Range(0, leaderboard.Tasks.Count).Select(i => (double)i).ToArray(), leaderboard.Tasks.ToArray());
        plot.Axes.SetLimitsY(0, 100);
        plot.YLabel("test accuracy (%)");
        plot.Title("Per-task test accuracy by merge method");
        plot.ShowLegend(Alignment.LowerRight);
        return plot;
    }

    private static Plot Versus(Leaderboard leaderboard, string title, string xLabel, Func<LeaderboardEntry, double?> x)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int m = 0; m < leaderboard.Entries.Count; m++)
        {
            var entry = leaderboard.Entries[m];
            if (x(entry) is not double value) continue;
            var point = plot.Add.Scatter(new[] { value }, new[] { 100 * entry.TestAverage });
            point.LineWidth = 0;
            point.MarkerSize = 12;
            point.Color = palette.GetColor(m);
            point.LegendText = entry.Method;
        }
        plot.XLabel(xLabel);
        plot.YLabel("average test accuracy (%)");
        plot.Title(title);
        // Room around the points so none hides under the legend, which sits outside the data area.
        plot.Axes.Margins(0.2, 0.2);
        plot.ShowLegend(Edge.Right);
        return plot;
    }
}
