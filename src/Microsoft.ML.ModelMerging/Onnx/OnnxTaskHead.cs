using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// One task of an exported multi-task model: its name (which names the output <c>scores_&lt;task&gt;</c>) and its
/// classification head. The exporter copies the head's tensors; it does not take ownership of the head.
/// </summary>
public sealed partial record OnnxTaskHead
{
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

    public string Task { get; }

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
