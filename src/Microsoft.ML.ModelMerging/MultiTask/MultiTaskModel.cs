using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MultiTask;

/// <summary>
/// What every merge algorithm returns: one model that scores each of its tasks with that task's head. A task-agnostic
/// model (task arithmetic, WEMoE, ...) is one <see cref="MultiTaskModelPart"/> serving every task; a task-conditioned one
/// (TALL masks, consensus, EMR) has one part per task, so the task must be known at inference. Each part computes its
/// features with the TorchSharp forward and writes the same computation as ONNX, so evaluation, export and ML.NET all
/// consume this one type. Disposing it releases the tensors its parts read.
/// </summary>
public sealed class MultiTaskModel : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly Dictionary<string, MultiTaskModelPart> _byTask = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <param name="parts">The parts; a task may appear in one part only.</param>
    /// <param name="owned">What the parts read (merged weights, routers, ...), disposed with this object.</param>
    internal MultiTaskModel(IReadOnlyList<MultiTaskModelPart> parts, IEnumerable<IDisposable>? owned = null)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0)
        {
            throw new ArgumentException("A multi-task model needs at least one part.", nameof(parts));
        }

        foreach (var part in parts)
        {
            foreach (string task in part.Tasks)
            {
                if (!_byTask.TryAdd(task, part))
                {
                    throw new ArgumentException($"Task '{task}' is served by more than one part; each task needs exactly one.", nameof(parts));
                }
            }
        }

        Parts = parts;
        _owned = owned?.ToArray() ?? [];
    }

    /// <summary>One dense backbone serving every head; the model owns <paramref name="weights"/> from here on.</summary>
    public static MultiTaskModel Dense(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        IReadOnlyList<OnnxTaskHead> heads, VitOnnxExportOptions? options = null)
    {
        var owner = new OwnedTensors(weights.Values);
        try
        {
            return new MultiTaskModel([new MultiTaskModelPart(new DenseVitOnnxExporter(config, weights, heads, options))], [owner]);
        }
        catch
        {
            owner.Dispose();
            throw;
        }
    }

    internal IReadOnlyList<MultiTaskModelPart> Parts { get; }

    /// <summary>Every task served, in part order.</summary>
    public IReadOnlyList<string> Tasks => Parts.SelectMany(p => p.Tasks).ToArray();

    /// <summary>True when tasks are served by different weights, so a caller must say which task an image belongs to.</summary>
    public bool NeedsTaskAtInference => Parts.Count > 1;

    /// <summary>The backbone's configuration (the same for every part).</summary>
    public VisionTransformerConfig Config => Parts[0].Exporter.Config;

    /// <summary>Parameters held at inference: one part's backbone (or upscaled model) plus every head.</summary>
    public long ParameterCount => Parts[0].Exporter.ParameterCount
        - Parts[0].Exporter.Heads.Sum(h => h.Head.Parameters.Sum(p => p.numel()))
        + Parts.SelectMany(p => p.Exporter.Heads).Sum(h => h.Head.Parameters.Sum(p => p.numel()));

    /// <summary>The part serving <paramref name="task"/>.</summary>
    internal MultiTaskModelPart Part(string task)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _byTask.TryGetValue(task, out var part)
            ? part
            : throw new ArgumentException($"The model does not serve task '{task}'; it serves {string.Join(", ", Tasks)}.", nameof(task));
    }

    /// <summary>Features [B, D] of images of <paramref name="task"/>: pixels in [0,1], [B,C,H,W] or flattened.</summary>
    public Tensor Features(string task, Tensor images) => Part(task).Exporter.Features(images);

    /// <summary>Features [B, D] of a task-agnostic model (one part), for images of any of its tasks.</summary>
    /// <exception cref="InvalidOperationException">The model needs the task at inference.</exception>
    public Tensor Features(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return NeedsTaskAtInference
            ? throw new InvalidOperationException("This model has one set of weights per task: call Features(task, images).")
            : Parts[0].Exporter.Features(images);
    }

    /// <summary>Logits [B, classes of the task] of images of <paramref name="task"/>.</summary>
    public Tensor Logits(string task, Tensor images)
    {
        var part = Part(task);
        return part.Exporter.Heads.First(h => h.Task == task).Head.Forward(part.Exporter.Features(images));
    }

    /// <summary>
    /// Where <paramref name="part"/> is written when the model is saved as ONNX at <paramref name="path"/>: the path itself
    /// for a one-part model, else <c>&lt;stem&gt;.&lt;task&gt;.onnx</c> per part (tasks joined by <c>+</c>).
    /// </summary>
    internal string OnnxPathFor(string path, MultiTaskModelPart part)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(part);
        if (Parts.Count == 1) return path;
        string stem = string.Equals(Path.GetExtension(path), ".onnx", StringComparison.OrdinalIgnoreCase) ? path[..^".onnx".Length] : path;
        return stem + "." + string.Join("+", part.Tasks) + ".onnx";
    }

    /// <summary>Disposes the weights and exporters the model owns.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (IDisposable owned in _owned)
        {
            owned.Dispose();
        }
    }
}

/// <summary>
/// One exportable model of a <see cref="MultiTaskModel"/>: an exporter (dense, or a variant such as WEMoE's) whose forward
/// is the part's TorchSharp computation and whose graph is the same computation in ONNX, with exactly the heads of <see cref="Tasks"/>.
/// </summary>
internal sealed record MultiTaskModelPart
{
    public MultiTaskModelPart(DenseVitOnnxExporter exporter)
    {
        ArgumentNullException.ThrowIfNull(exporter);
        Exporter = exporter;
        Tasks = exporter.Heads.Select(h => h.Task).ToArray();
    }

    public DenseVitOnnxExporter Exporter { get; }

    public IReadOnlyList<string> Tasks { get; }
}
