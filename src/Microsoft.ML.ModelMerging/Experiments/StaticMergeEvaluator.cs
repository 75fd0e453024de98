using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// A candidate with the accuracies it reached: on validation (used to choose) and on test (reported; null when only the
/// validation split was measured, see <see cref="StaticMergeEvaluator.EvaluateValidation"/>).
/// </summary>
public sealed record EvaluatedCandidate(MergeCandidate Candidate, TaskAccuracies Validation, TaskAccuracies? Test);

/// <summary>
/// Merges an expert set with weight-only methods in memory and evaluates the result on every task, each with its own head.
/// Methods that need the task at inference (TALL masks, consensus, EMR) are evaluated task by task with that task's
/// materialised weights. Hyperparameters are chosen on the validation split; the test split is only reported.
/// </summary>
public sealed class StaticMergeEvaluator
{
    private readonly ExpertPool _experts;
    private readonly BenchmarkSources? _sources;
    private readonly Dictionary<string, TaskSplits> _data = new(StringComparer.Ordinal);

    public StaticMergeEvaluator(ExpertPool experts, BenchmarkSources? sources = null)
    {
        _experts = experts;
        _sources = sources;
    }

    private TaskSplits Data(string task)
    {
        if (!_data.TryGetValue(task, out var splits)) _data[task] = splits = _experts.LoadData(task, _sources);
        return splits;
    }

    /// <summary>The merged model of one candidate (the caller disposes it).</summary>
    public MergeResult Merge(MergeCandidate candidate)
    {
        var method = MergeMethodRegistry.Default.Create(candidate.Method, new MergeParameters(candidate.Parameters));
        return new InMemoryMergeDriver().Merge(method, _experts.Pretrained, _experts.Experts, expertNames: _experts.TaskNames);
    }

    /// <summary>Accuracy on both splits of one candidate.</summary>
    public EvaluatedCandidate Evaluate(MergeCandidate candidate) => Evaluate(candidate, includeTest: true);

    /// <summary>
    /// Accuracy on the validation split only: what choosing among candidates needs. The test split, twice the size, is
    /// measured once for the chosen candidate.
    /// </summary>
    public EvaluatedCandidate EvaluateValidation(MergeCandidate candidate) => Evaluate(candidate, includeTest: false);

    private EvaluatedCandidate Evaluate(MergeCandidate candidate, bool includeTest)
    {
        using var result = Merge(candidate);
        var validation = new Dictionary<string, double>(StringComparer.Ordinal);
        var test = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int t = 0; t < _experts.Tasks.Count; t++)
        {
            string task = _experts.Tasks[t].Name;
            var taskWeights = result.HasTaskSpecificWeights ? result.MaterializeTask(t) : null;
            try
            {
                var weights = (IReadOnlyDictionary<string, Tensor>?)taskWeights ?? result.Merged;
                validation[task] = ExpertTrainer.Accuracy(_experts.Config, weights, _experts.Head(task), Data(task).Validation);
                if (includeTest) test[task] = ExpertTrainer.Accuracy(_experts.Config, weights, _experts.Head(task), Data(task).Test);
            }
            finally
            {
                if (taskWeights is not null) foreach (var w in taskWeights.Values) w.Dispose();
            }
        }
        return new EvaluatedCandidate(candidate, new TaskAccuracies(validation), includeTest ? new TaskAccuracies(test) : null);
    }

    /// <summary>
    /// Evaluates every candidate on validation and returns the one with the best validation average, measured on test too,
    /// with every candidate's validation result.
    /// </summary>
    public (EvaluatedCandidate Best, IReadOnlyList<EvaluatedCandidate> All) SelectOnValidation(IReadOnlyList<MergeCandidate> candidates,
        IProgress<EvaluatedCandidate>? progress = null, CancellationToken cancellation = default)
    {
        if (candidates.Count == 0) throw new ArgumentException("No candidate to evaluate.");
        var all = new List<EvaluatedCandidate>();
        foreach (var candidate in candidates)
        {
            cancellation.ThrowIfCancellationRequested();
            var evaluated = EvaluateValidation(candidate);
            all.Add(evaluated);
            progress?.Report(evaluated);
        }
        // Ties go to the first candidate listed, so the choice is deterministic.
        var best = all.Aggregate((a, b) => b.Validation.Average > a.Validation.Average ? b : a);
        return (Evaluate(best.Candidate), all);
    }
}
