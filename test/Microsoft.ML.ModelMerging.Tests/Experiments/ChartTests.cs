using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Experiments.Charts;
using Microsoft.ML.ModelMerging.Pools;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Tests.Experiments;

[TestClass]
public sealed class ChartTests
{
    private static readonly string[] Tasks = ["optical-digits", "glyph-digits", "road-signs", "house-numbers"];
    private static readonly string[] Charts = ["accuracy-per-task.png", "accuracy-vs-size.png", "accuracy-vs-latency.png"];

    // Category10's first three colours: the methods in leaderboard order.
    private static readonly SKColor[] MethodColours = [new(0x1f, 0x77, 0xb4), new(0xff, 0x7f, 0x0e), new(0x2c, 0xa0, 0x2c)];

    private static Leaderboard ThreeMethods()
    {
        LeaderboardEntry Entry(string method, double accuracy, long bytes, double latency)
        {
            var perTask = Tasks.Select((t, i) => (t, accuracy - 0.05 * i)).ToDictionary(p => p.t, p => p.Item2);
            var test = new TaskAccuracies(perTask);
            return new LeaderboardEntry
            {
                Method = method, Candidate = method, CandidatesTried = 1, ValidationScore = accuracy, Test = test, TestAverage = test.Average,
                TestNormalized = test.Average, TestWorst = test.Worst, MergeSeconds = 1, ParameterCount = 1000, ModelBytes = bytes,
                LatencyMilliseconds = latency,
            };
        }

        var individual = Tasks.ToDictionary(t => t, _ => 0.95);
        return new Leaderboard(Tasks, individual, RankingMetric.Average,
            [Entry("task-arithmetic", 0.9, 3 << 20, 1.5), Entry("ties", 0.8, 3 << 20, 1.6), Entry("wemoe", 0.7, 12 << 20, 4.0)],
            complete: true, skipped: []);
    }

    [TestMethod]
    public void TwentySeriesHaveTwentyColoursStartingWithCategory10()
    {
        var colours = Enumerable.Range(0, 20).Select(Chart.Color).ToList();
        Assert.HasCount(20, colours.Distinct());
        Assert.AreEqual(new ScottPlot.Color(31, 119, 180), colours[0], "Category10's blue first");
        Assert.AreEqual(new ScottPlot.Color(174, 199, 232), colours[10], "then its light shade");
        Assert.AreEqual(colours[0], Chart.Color(20), "repeating after twenty");
    }

    [TestMethod]
    public void LeaderboardChartsHaveTheirSizeBarsMarkersLabelsAndLegend()
    {
        using var dir = new TempDirectory();
        var files = LeaderboardCharts.Write(ThreeMethods(), dir.Path);
        CollectionAssert.AreEqual(Charts.Select(dir.File).ToArray(), files.ToArray());
        foreach (string file in files)
        {
            using var chart = SKBitmap.Decode(file);
            Assert.IsNotNull(chart, file);
            Assert.AreEqual(file.EndsWith("per-task.png", StringComparison.Ordinal) ? LeaderboardCharts.PerTaskWidth(Tasks.Length) : 900, chart.Width, file);
            Assert.AreEqual(LeaderboardCharts.Height, chart.Height, file);
            Assert.IsGreaterThan(100, Dark(chart, 0, 0, chart.Width, 40), $"{file}: the title");
            Assert.IsGreaterThan(50, Dark(chart, 0, chart.Height - 30, chart.Width, chart.Height), $"{file}: the x-axis label");
            Assert.IsGreaterThan(50, Dark(chart, 0, 0, 30, chart.Height), $"{file}: the y-axis label");

            // The legend is right of the plot area's frame: a swatch of every method's colour and its name beside it.
            int frame = RightFrame(chart);
            Assert.IsLessThan(chart.Width - 100, frame, $"{file}: room for the legend");
            for (int m = 0; m < MethodColours.Length; m++)
            {
                Assert.IsGreaterThan(40, Count(chart, MethodColours[m], 0, frame), $"{file}: bars or marker of method {m}");
                Assert.IsGreaterThan(20, Count(chart, MethodColours[m], frame, chart.Width), $"{file}: legend swatch of method {m}");
            }

            Assert.IsGreaterThan(200, Dark(chart, frame + 1, 0, chart.Width, chart.Height), $"{file}: legend labels");
        }

        using var perTask = SKBitmap.Decode(files[0]);
        Assert.IsGreaterThan(2000, Count(perTask, MethodColours[0], 0, perTask.Width), "four bars of the first method");
    }

    [TestMethod]
    public void ChartsAreTheSameBytesForTheSameInput()
    {
        using var first = new TempDirectory();
        using var second = new TempDirectory();
        var leaderboard = ThreeMethods();
        LeaderboardCharts.Write(leaderboard, first.Path);
        LeaderboardCharts.Write(leaderboard, second.Path);
        HeatmapChart.Save(first.File("heatmap.png"), "cosine similarity", Tasks, Cosines());
        HeatmapChart.Save(second.File("heatmap.png"), "cosine similarity", Tasks, Cosines());
        foreach (string png in Charts.Append("heatmap.png"))
            CollectionAssert.AreEqual(File.ReadAllBytes(first.File(png)), File.ReadAllBytes(second.File(png)), png);
    }

    [TestMethod]
    public void APngIsWrittenUnderATemporaryNameAndRenamedIntoPlace()
    {
        using var dir = new TempDirectory();
        string path = dir.File("heatmap.png");
        File.WriteAllText(path, "an older chart");
        Assert.AreEqual(path, HeatmapChart.Save(path, "cosine similarity", Tasks, Cosines()));
        using (var chart = SKBitmap.Decode(path)) Assert.IsNotNull(chart, "replaced by the new chart");
        CollectionAssert.AreEqual(new[] { path }, Directory.GetFiles(dir.Path), "no temporary file is left");

        // When the temporary file cannot be written, the chart already there stays whole.
        byte[] before = File.ReadAllBytes(path);
        Directory.CreateDirectory(path + ".partial.png");
        Assert.ThrowsExactly<UnauthorizedAccessException>(() => HeatmapChart.Save(path, "other", Tasks, Cosines()));
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path));
    }

    [TestMethod]
    public void TheHeatmapIsWhiteAtZeroBlueAtOneRedAtMinusOne()
    {
        using var dir = new TempDirectory();
        string path = HeatmapChart.Save(dir.File("heatmap.png"), "cosine similarity", Tasks, Cosines());
        using var chart = SKBitmap.Decode(path);
        Assert.IsGreaterThanOrEqualTo(Tasks.Length * HeatmapChart.Cell, chart.Width);
        Assert.IsGreaterThanOrEqualTo(Tasks.Length * HeatmapChart.Cell, chart.Height);
        int cellArea = HeatmapChart.Cell * HeatmapChart.Cell;
        // Four diagonal cells at 1, one cell at −1, one at 0.5: most of each cell (all but its annotation) in its colour.
        Assert.IsGreaterThan(4 * cellArea * 8 / 10, Count(chart, new SKColor(33, 102, 180), 0, chart.Width), "blue at 1");
        Assert.IsGreaterThan(cellArea * 8 / 10, Count(chart, new SKColor(214, 39, 39), 0, chart.Width), "red at −1");
        Assert.IsGreaterThan(cellArea * 8 / 10, Count(chart, new SKColor(144, 178, 217), 0, chart.Width), "light blue at 0.5");
        Assert.IsGreaterThan(500, Dark(chart, 0, 0, chart.Width, chart.Height), "labels and annotations");

        var colours = new HeatmapChart.WhiteAtZero();
        Assert.AreEqual(ScottPlot.Colors.White, colours.GetColor(0.5), "0 is the middle of [−1, 1]");
        Assert.AreEqual(new ScottPlot.Color(33, 102, 180), colours.GetColor(1));
        Assert.AreEqual(new ScottPlot.Color(214, 39, 39), colours.GetColor(-3), "clamped");
    }

    [TestMethod]
    public void AMissingChartFontIsNamedWithWhereItWasLookedFor()
    {
        using var dir = new TempDirectory();
        var error = Assert.ThrowsExactly<FileNotFoundException>(() => ChartFonts.Find(dir.Path, "DejaVuSans.ttf"));
        StringAssert.Contains(error.Message, "DejaVuSans.ttf");
        StringAssert.Contains(error.Message, dir.Path);
        StringAssert.Contains(error.Message, "fonts-dejavu-core");
        if (!OperatingSystem.IsWindows() && !OperatingSystem.IsMacOS() && Directory.Exists(FontCatalog.DefaultDirectory))
            Assert.IsNotNull(ChartFonts.Name, "DejaVu Sans is installed by build.sh");
    }

    // 1 on the diagonal, −1, 0 and 0.5 off it.
    private static double[,] Cosines()
    {
        var values = new double[4, 4];
        for (int i = 0; i < 4; i++) values[i, i] = 1;
        values[0, 1] = -1;
        values[1, 0] = 0.5;
        values[2, 3] = values[3, 2] = 0.2;
        return values;
    }

    private static int Count(SKBitmap bitmap, SKColor colour, int fromX, int toX)
    {
        int count = 0;
        for (int y = 0; y < bitmap.Height; y++)
            for (int x = fromX; x < toX; x++)
                if (bitmap.GetPixel(x, y) == colour) count++;
        return count;
    }

    private static int Dark(SKBitmap bitmap, int fromX, int fromY, int toX, int toY)
    {
        int count = 0;
        for (int y = fromY; y < toY; y++)
            for (int x = fromX; x < toX; x++)
                if (bitmap.GetPixel(x, y) is { Red: < 100, Green: < 100, Blue: < 100 }) count++;
        return count;
    }

    // The right edge of the plot area: the rightmost column dark over a third of the height.
    private static int RightFrame(SKBitmap bitmap)
    {
        for (int x = bitmap.Width - 1; x >= 0; x--)
            if (Dark(bitmap, x, 0, x + 1, bitmap.Height) > bitmap.Height / 3) return x;
        Assert.Fail("no frame");
        return -1;
    }
}
