using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// Unlabeled images handed to an algorithm that adapts at test time: float32 [N, C, H, W] in [0, 1], in the model's
/// channel count and size (the input column's values after the same scaling and channel averaging the exported model
/// applies). Owns its tensors.
/// </summary>
public sealed class UnlabeledImages : IDisposable
{
    /// <summary>Takes ownership of the images.</summary>
    /// <param name="all">Every image, [N, C, H, W] float32 in [0, 1].</param>
    /// <param name="byTask">The images of each task, when rows name their task; null for none.</param>
    /// <exception cref="ArgumentException"><paramref name="all"/> is not four-dimensional.</exception>
    public UnlabeledImages(Tensor all, IReadOnlyDictionary<string, Tensor>? byTask = null)
    {
        ArgumentNullException.ThrowIfNull(all);
        if (all.dim() != 4)
        {
            throw new ArgumentException($"Images must be [N, C, H, W]; got shape [{string.Join(", ", all.shape)}].", nameof(all));
        }

        All = all;
        ByTask = byTask ?? new Dictionary<string, Tensor>(StringComparer.Ordinal);
    }

    /// <summary>Every image, in the order of the rows.</summary>
    public Tensor All { get; }

    /// <summary>
    /// The images of each task, in row order, when the data named each row's task
    /// (ML.NET: MergeExpertsOptions.TaskColumnName); empty otherwise. Tasks without rows are absent.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ByTask { get; }

    /// <summary>Number of images (N).</summary>
    public long Count => All.shape[0];

    /// <summary>Disposes every image tensor.</summary>
    public void Dispose()
    {
        All.Dispose();
        foreach (Tensor tensor in ByTask.Values)
        {
            tensor.Dispose();
        }
    }
}
