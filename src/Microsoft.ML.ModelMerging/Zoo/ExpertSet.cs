using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>
/// A pre-trained model, its fine-tuned experts and their heads, as a zoo directory holds them: the input of every merge
/// method. Tensors are loaded on demand and owned by the set.
/// </summary>
public sealed class ExpertSet : IDisposable
{
    private readonly Dictionary<string, LoadedBackbone> _experts = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ClassificationHead> _heads = new(StringComparer.Ordinal);
    private LoadedBackbone? _pretrained;

    private ExpertSet(string directory, ZooManifest manifest, IReadOnlyList<ZooTask> tasks)
    {
        Directory = directory;
        Manifest = manifest;
        Tasks = tasks;
    }

    public string Directory { get; }
    public ZooManifest Manifest { get; }
    /// <summary>The tasks in this set (all of the zoo's, or the ones asked for), in manifest order.</summary>
    public IReadOnlyList<ZooTask> Tasks { get; }
    public IReadOnlyList<string> TaskNames => Tasks.Select(t => t.Name).ToList();
    public VisionTransformerConfig Config => Manifest.ModelConfig;

    /// <summary>Opens a zoo directory, optionally restricted to some tasks.</summary>
    public static ExpertSet Load(string directory, IEnumerable<string>? tasks = null)
    {
        var manifest = ZooManifest.Read(directory);
        var chosen = tasks?.ToList() is { Count: > 0 } names ? names.Select(manifest.Task).ToList() : manifest.Tasks.ToList();
        return new ExpertSet(directory, manifest, chosen);
    }

    public IReadOnlyDictionary<string, Tensor> Pretrained =>
        (_pretrained ??= ModelCheckpoints.LoadBackbone(Path.Combine(Directory, Manifest.Pretrained))).Weights;

    public IReadOnlyDictionary<string, Tensor> Expert(string task)
    {
        if (!_experts.TryGetValue(task, out var expert))
            _experts[task] = expert = ModelCheckpoints.LoadBackbone(Path.Combine(Directory, Manifest.Task(task).Expert));
        return expert.Weights;
    }

    public ClassificationHead Head(string task)
    {
        if (!_heads.TryGetValue(task, out var head))
            _heads[task] = head = ModelCheckpoints.LoadHead(Path.Combine(Directory, Manifest.Task(task).Head), task, Manifest.Task(task).ClassNames);
        return head;
    }

    public IReadOnlyList<IReadOnlyDictionary<string, Tensor>> Experts => Tasks.Select(t => Expert(t.Name)).ToList();

    /// <summary>The task's fixed splits, rebuilt from the package data and checked against the fingerprints recorded in the manifest.</summary>
    public TaskSplits LoadData(string task, BenchmarkSources? sources = null)
    {
        var zooTask = Manifest.Task(task);
        int seed = Manifest.Recipe.TryGetProperty("seed", out var s) ? s.GetInt32() : 0;
        var splits = BenchmarkTasks.Get(task).Load(sources, seed);
        foreach (var (split, data) in new[] { ("train", splits.Train), ("validation", splits.Validation), ("test", splits.Test) })
            if (zooTask.Fingerprints.TryGetValue(split, out var expected) && expected != data.Fingerprint)
                throw new InvalidDataException(
                    $"Task '{task}' {split} split differs from the one the zoo was built on (fingerprint {data.Fingerprint[..12]}…, zoo {expected[..12]}…): " +
                    "the installed data or font packages changed. Rebuild the zoo with `mlmerge zoo build`.");
        return splits;
    }

    public void Dispose()
    {
        _pretrained?.Dispose();
        foreach (var e in _experts.Values) e.Dispose();
        foreach (var h in _heads.Values) h.Dispose();
    }
}
