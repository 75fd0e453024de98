using System.Globalization;
using ScottPlot;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>
/// A square matrix with labelled rows and columns as a PNG heatmap, each cell annotated with its value: e.g. the cosine
/// similarity of the task vectors of a pool. Values in [−1, 1]: white at 0, blue towards 1, red towards −1.
/// </summary>
internal static class HeatmapChart
{
    /// <summary>Pixels a cell.</summary>
    public const int Cell = 64;

    /// <summary>Draws <paramref name="values"/> (n×n, labelled by <paramref name="labels"/>) and writes the PNG atomically; returns the path.</summary>
    public static string Save(string path, string title, IReadOnlyList<string> labels, double[,] values)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(values);
        int n = labels.Count;
        if (values.GetLength(0) != n || values.GetLength(1) != n)
            throw new ArgumentException($"A {values.GetLength(0)}×{values.GetLength(1)} matrix for {n} labels.");
        if (n == 0) throw new ArgumentException("No labels: an empty matrix has no heatmap.", nameof(labels));

        using var plot = new Plot();
        // Row i of the matrix is drawn as the i-th row from the top: cell (i, j) covers x in [j, j + 1], y in [n − i − 1, n − i].
        var heatmap = plot.Add.Heatmap(values);
        heatmap.Colormap = new WhiteAtZero();
        heatmap.ManualRange = new ScottPlot.Range(-1, 1);
        heatmap.CellAlignment = ScottPlot.Alignment.LowerLeft;
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                var text = plot.Add.Text(values[i, j].ToString("F2", CultureInfo.InvariantCulture), j + 0.5, n - i - 0.5);
                text.Alignment = ScottPlot.Alignment.MiddleCenter;
                text.LabelStyle.FontSize = 13;
                text.LabelStyle.ForeColor = Math.Abs(values[i, j]) > 0.6 ? Colors.White : Colors.Black;
            }
        }

        double[] centres = Enumerable.Range(0, n).Select(i => i + 0.5).ToArray();
        plot.Axes.Bottom.SetTicks(centres, labels.ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plot.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.MiddleLeft;
        plot.Axes.Left.SetTicks(centres, labels.Reverse().ToArray());
        // No tick marks (a mark would read as a dash before a rotated label); the column labels start a little below the matrix.
        plot.Axes.Bottom.MajorTickStyle.Length = plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Axes.Bottom.TickLabelStyle.OffsetY = 6;
        plot.Axes.SetLimits(0, n, 0, n);
        plot.Grid.IsVisible = false;
        plot.Title(title);

        // The matrix at a fixed cell size, with room for the labels left of and under it, and for the title (centred over
        // the matrix) above.
        int labelRoom = (int)Math.Ceiling(labels.Max(l => Chart.TextWidth(l, plot.Axes.Left.TickLabelStyle.FontSize))) + 20;
        int matrix = n * Cell, halfTitle = (int)Math.Ceiling(Chart.TextWidth(title, plot.Axes.Title.Label.FontSize, bold: true) / 2) + 20;
        int left = Math.Max(labelRoom, halfTitle - matrix / 2), right = Math.Max(30, halfTitle - matrix / 2);
        plot.Layout.Fixed(new PixelPadding(left: left, right: right, bottom: labelRoom, top: 50));
        return Chart.SavePng(plot, left + matrix + right, 50 + matrix + labelRoom, path);
    }

    /// <summary>White at the middle of the range (0 for [−1, 1]), blue towards its top, red towards its bottom.</summary>
    internal sealed class WhiteAtZero : IColormap
    {
        public string Name => "white at zero";

        /// <summary>The colour at <paramref name="position"/> along the range, 0 its bottom and 1 its top (clamped).</summary>
        public Color GetColor(double position)
        {
            double v = double.IsNaN(position) ? 0 : Math.Clamp(2 * position - 1, -1, 1);
            return v >= 0
                ? new Color((byte)(255 - 222 * v), (byte)(255 - 153 * v), (byte)(255 - 75 * v))
                : new Color((byte)(255 + 41 * v), (byte)(255 + 216 * v), (byte)(255 + 216 * v));
        }
    }
}
