using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// Evaluates candidates of the methods trained by test-time adaptation (WEMoE, E-WEMoE, AdaMerging): the model adapts on
/// the unlabeled test images of every task, as in FusionBench's protocol, and is then measured on both splits. The same
/// <see cref="TestTimeAdaptationStrategy"/> runs here and inside <c>MergeExperts</c>, so the leaderboard's number is what
/// the ML.NET transformer fitted on the same images scores.
/// </summary>
public sealed class AdaptiveMergeEvaluator : IDisposable
{
    private readonly ExpertPool _experts;
    private readonly BenchmarkSources? _sources;
    private readonly Dictionary<string, TaskSplits> _data = new(StringComparer.Ordinal);
    private UnlabeledImages? _testImages;

    public AdaptiveMergeEvaluator(ExpertPool experts, BenchmarkSources? sources = null)
    {
        _experts = experts;
        _sources = sources;
    }

    /// <summary>True for <c>wemoe</c>, <c>e-wemoe</c>, <c>adamerging-task</c> and <c>adamerging-layer</c>.</summary>
    public static bool Handles(string method) =>
        AdaptationMethods.All.Contains(method.Trim(), StringComparer.OrdinalIgnoreCase) && AdaptationMethods.Parse(method).IsTestTimeAdaptation();

    /// <summary>
    /// Adapts one candidate, measures it on validation and test, and returns it with its exported ONNX model (every task's
    /// head) for the size and latency columns when <paramref name="export"/> is set.
    /// </summary>
    public (EvaluatedCandidate Result, byte[]? Onnx, long Parameters) Evaluate(MergeCandidate candidate, bool export = true, CancellationToken cancellation = default)
    {
        var strategy = TestTimeAdaptationStrategy.Create(candidate.Method, candidate.Parameters);
        var context = new MergeStrategyContext(_experts, _experts.TaskNames, new VitOnnxExportOptions(), TestImages(), cancellation);
        using MergedModel merged = strategy.Merge(context);
        var exporter = merged.Parts[0].Exporter;
        // The exporter's forward is the adapted model's TorchSharp forward (WEMoE's routed MLPs, or AdaMerging's weights).
        Func<Tensor, Tensor> features = exporter.Features;
        return (new EvaluatedCandidate(candidate, Accuracy(features, EvaluationSplit.Validation), Accuracy(features, EvaluationSplit.Test)),
            export ? exporter.Export() : null, exporter.ParameterCount);
    }

    private TaskAccuracies Accuracy(Func<Tensor, Tensor> features, EvaluationSplit split)
    {
        var perTask = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string task in _experts.TaskNames)
        {
            var data = TaskAccuracy.Pick(Data(task), split);
            var head = _experts.Head(task);
            using var images = data.ToTensor();
            using var labels = data.LabelsToTensor();
            perTask[task] = Training.ClassifierEvaluation.Accuracy(x => head.Forward(features(x)), images, labels);
        }

        return new TaskAccuracies(perTask);
    }

    // Rendering and fingerprinting a task's data takes seconds: once per experiment.
    private TaskSplits Data(string task)
    {
        if (!_data.TryGetValue(task, out var splits)) _data[task] = splits = _experts.LoadData(task, _sources);
        return splits;
    }

    public void Dispose() => _testImages?.Dispose();

    // Loaded once for every candidate: the test images of each task, unlabeled.
    private UnlabeledImages TestImages()
    {
        if (_testImages is not null) return _testImages;
        var byTask = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (string task in _experts.TaskNames) byTask[task] = Data(task).Test.ToTensor();
        return _testImages = new UnlabeledImages(cat(byTask.Values.ToArray(), 0), byTask);
    }
}
