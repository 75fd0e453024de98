using System.Diagnostics;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// A candidate with the accuracies it reached: on validation (used to choose) and on test (reported; null when only the
/// validation split was measured), and how long the merge alone took (evaluation not included).
/// </summary>
internal sealed record EvaluatedCandidate(MergeCandidate Candidate, TaskAccuracies Validation, TaskAccuracies? Test, double MergeSeconds = 0);

/// <summary>
/// Runs any registered algorithm on a pool and measures the resulting <see cref="MultiTaskModel"/> on every task, each task
/// scored by its own head (a task-conditioned model with that task's weights). Test-time adaptation adapts on the pool's
/// unlabeled test images, loaded once, as in FusionBench's protocol; data-based methods read the training split.
/// Hyperparameters are chosen on validation; test is only reported.
/// </summary>
internal sealed class CandidateEvaluator : IDisposable
{
    private readonly ExpertPool _pool;
    private readonly BenchmarkSources? _sources;
    private readonly MergeAlgorithmRegistry _registry;
    private readonly Dictionary<string, TaskSplits> _data = new(StringComparer.Ordinal);
    private UnlabeledImages? _testImages;

    public CandidateEvaluator(ExpertPool pool, BenchmarkSources? sources = null, MergeAlgorithmRegistry? registry = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _pool = pool;
        _sources = sources;
        _registry = registry ?? MergeAlgorithmRegistry.Default;
    }

    /// <summary>The merged model of one candidate (the caller disposes it) and the seconds the merge took.</summary>
    public (MultiTaskModel Model, double Seconds) Run(MergeCandidate candidate, IProgress<AlgorithmProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        var algorithm = _registry.Get(candidate.Method);
        var context = new AlgorithmContext
        {
            Sources = _sources,
            Images = algorithm.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages) ? TestImages() : null,
            Progress = progress,
            Cancellation = cancellation,
        };
        // Reading the checkpoints is not the merge: the pool loads them once, before the clock starts.
        if (_pool.HasPretrained) _ = _pool.Pretrained;
        _ = _pool.Experts;
        var clock = Stopwatch.StartNew();
        var model = algorithm.Run(_pool, new MergeParameters(candidate.Parameters), context);
        return (model, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Accuracy on validation, and on test too when <paramref name="includeTest"/>.</summary>
    public EvaluatedCandidate Evaluate(MergeCandidate candidate, bool includeTest = true, IProgress<AlgorithmProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        var (model, seconds) = Run(candidate, progress, cancellation);
        using (model)
        {
            return new EvaluatedCandidate(candidate, Accuracy(model, EvaluationSplit.Validation),
                includeTest ? Accuracy(model, EvaluationSplit.Test) : null, seconds);
        }
    }

    /// <summary>
    /// Evaluates every candidate on validation and returns the one with the best validation average, measured on test too,
    /// with every candidate's validation result. Ties go to the first candidate listed, so the choice is deterministic.
    /// </summary>
    public (EvaluatedCandidate Best, IReadOnlyList<EvaluatedCandidate> All) SelectOnValidation(IReadOnlyList<MergeCandidate> candidates,
        IProgress<EvaluatedCandidate>? progress = null, CancellationToken cancellation = default)
    {
        if (candidates.Count == 0) throw new ArgumentException("No candidate to evaluate.");
        var all = new List<EvaluatedCandidate>();
        foreach (var candidate in candidates)
        {
            cancellation.ThrowIfCancellationRequested();
            var evaluated = Evaluate(candidate, includeTest: false, cancellation: cancellation);
            all.Add(evaluated);
            progress?.Report(evaluated);
        }

        var best = all.Aggregate((a, b) => b.Validation.Average > a.Validation.Average ? b : a);
        return (Evaluate(best.Candidate, cancellation: cancellation), all);
    }

    /// <summary>Per-task accuracy of <paramref name="model"/> on one split of the pool's tasks.</summary>
    public TaskAccuracies Accuracy(MultiTaskModel model, EvaluationSplit split)
    {
        ArgumentNullException.ThrowIfNull(model);
        var perTask = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string task in _pool.TaskNames)
        {
            var data = TaskAccuracy.Pick(Data(task), split);
            using var images = data.ToTensor();
            using var labels = data.LabelsToTensor();
            perTask[task] = ClassifierEvaluation.Accuracy(x => model.Logits(task, x), images, labels);
        }

        return new TaskAccuracies(perTask);
    }

    // Rendering and fingerprinting a task's data takes seconds: once per evaluator.
    private TaskSplits Data(string task)
    {
        if (!_data.TryGetValue(task, out var splits)) _data[task] = splits = _pool.LoadData(task, _sources);
        return splits;
    }

    // Loaded once for every adaptive candidate: the test images of each task, unlabeled.
    private UnlabeledImages TestImages()
    {
        if (_testImages is not null) return _testImages;
        var byTask = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (string task in _pool.TaskNames) byTask[task] = Data(task).Test.ToTensor();
            return _testImages = new UnlabeledImages(cat(byTask.Values.ToArray(), 0), byTask);
        }
        catch
        {
            foreach (Tensor tensor in byTask.Values) tensor.Dispose();
            throw;
        }
    }

    public void Dispose() => _testImages?.Dispose();
}
