using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>Which split to evaluate on: validation chooses hyperparameters, test is for reporting.</summary>
public enum EvaluationSplit
{
    /// <summary>The validation split, for choosing hyperparameters.</summary>
    Validation,
    /// <summary>The test split, for reporting only.</summary>
    Test,
}

/// <summary>Per-task accuracies of one model, with the averages FusionBench reports.</summary>
public sealed record TaskAccuracies(IReadOnlyDictionary<string, double> PerTask)
{
    /// <summary>Mean accuracy over the tasks.</summary>
    public double Average => PerTask.Values.Average();
    /// <summary>Lowest accuracy of any task.</summary>
    public double Worst => PerTask.Values.Min();

    /// <summary>Mean over tasks of merged accuracy / individual expert accuracy.</summary>
    public double NormalizedAverage(IReadOnlyDictionary<string, double> individual) =>
        PerTask.Average(kv => kv.Value / individual[kv.Key]);
}

/// <summary>Evaluates one backbone (with each task's own head) on the zoo's tasks.</summary>
public static class TaskAccuracy
{
    /// <summary>Parses <c>val</c>, <c>validation</c> or <c>test</c> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">Any other text.</exception>
    public static EvaluationSplit ParseSplit(string text) => text.Trim().ToLowerInvariant() switch
    {
        "val" or "validation" => EvaluationSplit.Validation,
        "test" => EvaluationSplit.Test,
        _ => throw new ArgumentException($"Unknown split '{text}': expected val or test."),
    };

    /// <summary>The split of <paramref name="splits"/> that <paramref name="split"/> names.</summary>
    public static ImageDataset Pick(TaskSplits splits, EvaluationSplit split) => split == EvaluationSplit.Test ? splits.Test : splits.Validation;

    /// <summary>Accuracy of <paramref name="features"/> + each task's head on each task's split.</summary>
    public static TaskAccuracies Evaluate(ExpertPool experts, Func<Tensor, Tensor> features, EvaluationSplit split, BenchmarkSources? sources = null) =>
        Evaluate(experts, (_, x) => features(x), split, sources);

    /// <summary>Accuracy of features that depend on the task (a model with one set of weights per task) + each task's head.</summary>
    public static TaskAccuracies Evaluate(ExpertPool experts, Func<string, Tensor, Tensor> features, EvaluationSplit split, BenchmarkSources? sources = null)
    {
        var perTask = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var task in experts.Tasks)
        {
            var data = Pick(experts.LoadData(task.Name, sources), split);
            var head = experts.Head(task.Name);
            using var images = data.ToTensor();
            using var labels = data.LabelsToTensor();
            perTask[task.Name] = ClassifierEvaluation.Accuracy(x => head.Forward(features(task.Name, x)), images, labels);
        }
        return new TaskAccuracies(perTask);
    }

    /// <summary>Accuracy of a dense backbone, given as <paramref name="config"/> and <paramref name="weights"/>, with each task's head.</summary>
    /// <param name="experts">The pool: tasks, heads and data.</param>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="weights">The backbone's tensors by name.</param>
    /// <param name="split">Validation or test.</param>
    /// <param name="sources">Where benchmark tasks' package data is; the default locations when null.</param>
    public static TaskAccuracies Evaluate(ExpertPool experts, VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        EvaluationSplit split, BenchmarkSources? sources = null) =>
        Evaluate(experts, x => VisionTransformer.Forward(config, weights, x), split, sources);
}
