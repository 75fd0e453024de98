using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.DataMerging;

/// <summary>
/// One expert with examples of its own task: the input of the data-dependent merges. <see cref="RegMeanMerge"/> reads
/// only the images; <see cref="FisherMerge"/> also needs the task's <see cref="Head"/> and the <see cref="Labels"/>.
/// The caller keeps owning every tensor.
/// </summary>
/// <param name="Name">Task name (for progress and messages).</param>
/// <param name="Expert">The expert's backbone tensors by Hugging Face CLIP name; other tensors are ignored.</param>
/// <param name="Images">Pixels in [0,1], [N,C,H,W] or flattened [N,C·H·W].</param>
internal sealed record ExpertExamples(string Name, IReadOnlyDictionary<string, Tensor> Expert, Tensor Images)
{
    /// <summary>The task's classification head (frozen; Fisher merging differentiates through it).</summary>
    public ClassificationHead? Head { get; init; }

    /// <summary>Class index of every image, [N] int64 (Fisher merging).</summary>
    public Tensor? Labels { get; init; }

    /// <summary>
    /// A seeded, class-stratified choice of <paramref name="count"/> examples of a training split (all of them when the
    /// split is not larger), so every merge of the same zoo with the same seed reads the same examples.
    /// </summary>
    public static ImageDataset Sample(ImageDataset train, int count, int seed)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        if (count >= train.Count)
        {
            return train;
        }

        int[] chosen = StratifiedSampler.Split(train.Labels.Span, train.ClassCount, [count], seed)[0];
        return train.Select(chosen, $"{train.Name}/{count}-examples");
    }

    internal static void CheckAll(IReadOnlyList<ExpertExamples> tasks, bool needLabels)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        if (tasks.Count == 0)
        {
            throw new ArgumentException("At least one expert with examples is needed.", nameof(tasks));
        }

        foreach (var task in tasks)
        {
            if (task is null || task.Expert is null || task.Images is null)
            {
                throw new ArgumentException("Every task needs an expert and images.", nameof(tasks));
            }

            if (task.Images.dim() < 2 || task.Images.shape[0] == 0)
            {
                throw new ArgumentException($"Task '{task.Name}' has images of shape {NamedTensorShape.Format(task.Images.shape)}; expected a non-empty batch [N, ...].", nameof(tasks));
            }

            if (!needLabels)
            {
                continue;
            }

            if (task.Head is null || task.Labels is null)
            {
                throw new ArgumentException($"Task '{task.Name}' needs a head and labels for Fisher merging.", nameof(tasks));
            }

            if (task.Labels.dim() != 1 || task.Labels.shape[0] != task.Images.shape[0])
            {
                throw new ArgumentException(
                    $"Task '{task.Name}' has {task.Images.shape[0]} images but labels of shape {NamedTensorShape.Format(task.Labels.shape)}.", nameof(tasks));
            }
        }
    }
}

/// <summary>Reported while a data-dependent merge reads the examples of each task.</summary>
/// <param name="Task">The task being read.</param>
/// <param name="TaskIndex">Its position, 0-based.</param>
/// <param name="TaskCount">Number of tasks.</param>
/// <param name="Done">Examples of this task processed so far.</param>
/// <param name="Total">Examples of this task.</param>
internal sealed record DataMergeProgress(string Task, int TaskIndex, int TaskCount, long Done, long Total);
