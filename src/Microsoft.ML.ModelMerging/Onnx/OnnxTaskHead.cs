using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// One task of an exported multi-task model: its name (which names the output <c>scores_&lt;task&gt;</c>) and its
/// classification head. The exporter copies the head's tensors; it does not take ownership of the head.
/// </summary>
public sealed partial record OnnxTaskHead
{
    /// <summary>Pairs a task name with its head.</summary>
    /// <param name="task">The task's name: letters, digits, <c>_</c>, <c>-</c> or <c>.</c>, starting with a letter or digit.</param>
    /// <param name="head">The task's head; not owned.</param>
    /// <exception cref="ArgumentException">The task name has other characters.</exception>
    public OnnxTaskHead(string task, ClassificationHead head)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(head);
        if (!TaskNamePattern().IsMatch(task))
        {
            throw new ArgumentException(
                $"Task name '{task}' is not allowed: use letters, digits, '_', '-' or '.', starting with a letter or digit (it becomes the output 'scores_{task}').",
                nameof(task));
        }

        Task = task;
        Head = head;
    }

    /// <summary>The task's name; the scores output is <c>scores_&lt;task&gt;</c>.</summary>
    public string Task { get; }

    /// <summary>The task's classification head (not owned).</summary>
    public ClassificationHead Head { get; }

    /// <summary>The name of the scores output of <paramref name="task"/>.</summary>
    public static string ScoresOutputName(string task) => "scores_" + task;

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex TaskNamePattern();
}

/// <summary>What the per-task outputs of an exported classifier hold.</summary>
public enum OnnxScoreKind
{
    /// <summary>softmax(logits) per row: class probabilities that sum to 1, like ML.NET's multiclass <c>Score</c> column.</summary>
    Probabilities,

    /// <summary>The head's raw logits (what entropy-based test-time adaptation and calibration start from).</summary>
    Logits,
}
