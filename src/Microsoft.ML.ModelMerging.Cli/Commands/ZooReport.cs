using System.Globalization;
using System.Text;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

/// <summary>Plain-text tables the pool and zoo commands print.</summary>
internal static class ZooReport
{
    private static string Pct(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture);

    public static string Table(PoolManifest manifest)
    {
        var text = new StringBuilder();
        if (manifest.Pretraining is { } pretraining)
            text.AppendLine(CultureInfo.InvariantCulture,
                $"pre-trained on {pretraining.Corpus}: {pretraining.Classes} classes, {pretraining.Train} images, held-out accuracy {Pct(pretraining.ValidationAccuracy)}%");
        text.AppendLine($"{"task",-18} {"linear probe (test)",20} {"expert (test)",14}");
        foreach (var t in manifest.Tasks)
            text.AppendLine(CultureInfo.InvariantCulture, $"{t.Name,-18} {Pct(t.PretrainedLinearProbe.Test),20} {Pct(t.Individual.Test),14}");
        return text.ToString();
    }

    public static string Accuracies(ExpertPool experts, TaskAccuracies accuracies, EvaluationSplit split)
    {
        double Individual(string task) => split == EvaluationSplit.Test ? experts.Manifest.Task(task).Individual.Test : experts.Manifest.Task(task).Individual.Validation;
        var text = new StringBuilder();
        text.AppendLine($"{"task",-18} {"accuracy",9} {"expert",8}");
        foreach (var (task, accuracy) in accuracies.PerTask)
            text.AppendLine(CultureInfo.InvariantCulture, $"{task,-18} {Pct(accuracy),9} {Pct(Individual(task)),8}");
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => Individual(t.Name));
        text.AppendLine(CultureInfo.InvariantCulture,
            $"{"average",-18} {Pct(accuracies.Average),9}   normalised {Pct(accuracies.NormalizedAverage(individual))}% of the experts ({split.ToString().ToLowerInvariant()} split)");
        return text.ToString();
    }
}
