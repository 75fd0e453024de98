using System.Globalization;
using System.Text;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// FusionBench's table layout: one row per method, one column per task, then the average and the normalised average
/// (mean over tasks of accuracy / the individual expert's accuracy), as Markdown.
/// </summary>
internal sealed class AccuracyTable
{
    private readonly List<(string Method, string Note, TaskAccuracies Accuracies)> _rows = new();

    public AccuracyTable(IReadOnlyList<string> tasks, IReadOnlyDictionary<string, double> individual)
    {
        Tasks = tasks;
        Individual = individual;
    }

    public IReadOnlyList<string> Tasks { get; }
    public IReadOnlyDictionary<string, double> Individual { get; }

    public void Add(string method, TaskAccuracies accuracies, string note = "") => _rows.Add((method, note, accuracies));

    public string ToMarkdown()
    {
        var inv = CultureInfo.InvariantCulture;
        static string Pct(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture);
        var text = new StringBuilder();
        text.AppendLine("| method | " + string.Join(" | ", Tasks) + " | avg | norm. avg | chosen on validation |");
        text.AppendLine("|---|" + string.Concat(Tasks.Select(_ => "---:|")) + "---:|---:|---|");
        foreach (var (method, note, accuracies) in _rows)
        {
            var restricted = new TaskAccuracies(Tasks.ToDictionary(t => t, t => accuracies.PerTask[t]));
            text.AppendLine(inv, $"| {method} | {string.Join(" | ", Tasks.Select(t => Pct(accuracies.PerTask[t])))} | {Pct(restricted.Average)} | {Pct(restricted.NormalizedAverage(Individual))} | {note} |");
        }
        return text.ToString();
    }
}
