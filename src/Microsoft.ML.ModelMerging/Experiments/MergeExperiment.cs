using System.Diagnostics;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>The settings one merge method is tried with; the best on validation represents the method on the leaderboard.</summary>
public sealed record MergeMethodSearch(string Method, IReadOnlyList<MergeCandidate> Candidates)
{
    private static readonly double[] Lambdas = { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 };

    /// <summary>
    /// Test-time adaptation steps of the comparison's adaptive methods: shortened from the 1000 of the full protocol so that a
    /// comparison of every method fits in minutes; <see cref="Adaptive"/> takes any count.
    /// </summary>
    public const int DefaultAdaptationSteps = 200;

    /// <summary>
    /// The methods trained by test-time adaptation, each with one setting: <paramref name="steps"/> steps, the method's defaults
    /// otherwise. The flagship WEMoE comes first, so a tight time budget still reaches it.
    /// </summary>
    public static IReadOnlyList<MergeMethodSearch> Adaptive(int steps = DefaultAdaptationSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        string text = steps.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new[] { "wemoe", "adamerging-layer", "e-wemoe", "adamerging-task" }
            .Select(m => new MergeMethodSearch(m, new[] { new MergeCandidate(m, new Dictionary<string, string> { ["steps"] = text }) }))
            .ToList();
    }

    /// <summary>Every weight-only method with a small grid over its main hyperparameters.</summary>
    public static IReadOnlyList<MergeMethodSearch> WeightOnly { get; } = new[]
    {
        new MergeMethodSearch("simple-average", new[] { new MergeCandidate("simple-average") }),
        new MergeMethodSearch("task-arithmetic", MergeCandidate.Grid("task-arithmetic", new Dictionary<string, double[]> { ["lambda"] = Lambdas })),
        new MergeMethodSearch("ties", MergeCandidate.Grid("ties", new Dictionary<string, double[]> { ["lambda"] = Lambdas, ["keep"] = new[] { 0.1, 0.2 } })),
        new MergeMethodSearch("dare", MergeCandidate.Grid("dare", new Dictionary<string, double[]> { ["lambda"] = Lambdas, ["drop-rate"] = new[] { 0.5 } })),
        new MergeMethodSearch("tall-masks", MergeCandidate.Grid("tall-masks", new Dictionary<string, double[]> { ["lambda"] = new[] { 0.3, 0.5, 1.0 }, ["tall-lambda"] = new[] { 0.2, 0.4, 0.6 } })),
        new MergeMethodSearch("consensus", MergeCandidate.Grid("consensus", new Dictionary<string, double[]> { ["lambda"] = Lambdas })),
        new MergeMethodSearch("emr", new[] { new MergeCandidate("emr") }),
    };

    /// <summary>Every method: the weight-only ones with a small grid over their main hyperparameters, then the adaptive ones.</summary>
    public static IReadOnlyList<MergeMethodSearch> Defaults { get; } = WeightOnly.Concat(Adaptive()).ToList();

    /// <summary>The default searches of the named methods, in the order given; adaptive ones run <paramref name="adaptationSteps"/> steps.</summary>
    public static IReadOnlyList<MergeMethodSearch> For(IEnumerable<string> methods, int adaptationSteps = DefaultAdaptationSteps) => methods.Select(m =>
        WeightOnly.Concat(Adaptive(adaptationSteps)).FirstOrDefault(d => d.Method.Equals(m.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"No comparison search for method '{m}'; available: {string.Join(", ", Defaults.Select(d => d.Method))}.")).ToList();
}

public sealed record MergeExperimentOptions
{
    public IReadOnlyList<MergeMethodSearch> Searches { get; init; } = MergeMethodSearch.Defaults;
    /// <summary>No new candidate starts once this much time has passed (the running one finishes).</summary>
    public TimeSpan? TimeBudget { get; init; }
    public RankingMetric Metric { get; init; } = RankingMetric.Average;
    /// <summary>Export each method's chosen model to ONNX to report its size and ONNX Runtime latency.</summary>
    public bool MeasureOnnx { get; init; } = true;
    public int LatencyRuns { get; init; } = 30;
}

/// <summary>Where an experiment is, reported before each candidate and after each method.</summary>
public sealed record MergeExperimentProgress(string Method, int MethodIndex, int MethodCount, int Candidate, int CandidateCount, LeaderboardEntry? Finished);

/// <summary>
/// AutoML for model merging: tries each method's settings on the validation split, keeps the best per method, measures it on
/// the test split (plus time, size and ONNX latency) and ranks the methods. A time budget or a cancellation stops it between
/// candidates and still returns a valid, partial leaderboard.
/// </summary>
public sealed class MergeExperiment
{
    private readonly ExpertPool _experts;
    private readonly BenchmarkSources? _sources;

    public MergeExperiment(ExpertPool experts, MergeExperimentOptions? options = null, BenchmarkSources? sources = null)
    {
        _experts = experts;
        _sources = sources;
        Options = options ?? new MergeExperimentOptions();
        if (Options.Searches.Count == 0) throw new ArgumentException("The experiment has no method to try.");
    }

    public MergeExperimentOptions Options { get; }

    public Leaderboard Run(IProgress<MergeExperimentProgress>? progress = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var individual = _experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Validation);
        var individualTest = _experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var evaluator = new StaticMergeEvaluator(_experts, _sources);
        using var adaptive = new AdaptiveMergeEvaluator(_experts, _sources);
        var entries = new List<LeaderboardEntry>();
        var skipped = new List<string>();
        bool stopped = false;
        for (int m = 0; m < Options.Searches.Count; m++)
        {
            var search = Options.Searches[m];
            if (stopped)
            {
                skipped.Add(search.Method);
                continue;
            }
            var methodClock = Stopwatch.StartNew();
            var tried = new List<EvaluatedCandidate>();
            var adaptedModels = new Dictionary<EvaluatedCandidate, (byte[]? Onnx, long Parameters)>();
            for (int c = 0; c < search.Candidates.Count; c++)
            {
                if (cancellation.IsCancellationRequested || (Options.TimeBudget is { } budget && clock.Elapsed >= budget))
                {
                    stopped = true;
                    break;
                }
                progress?.Report(new MergeExperimentProgress(search.Method, m, Options.Searches.Count, c, search.Candidates.Count, null));
                try
                {
                    if (AdaptiveMergeEvaluator.Handles(search.Candidates[c].Method))
                    {
                        var (result, onnx, parameters) = adaptive.Evaluate(search.Candidates[c], Options.MeasureOnnx, cancellation);
                        tried.Add(result);
                        adaptedModels[result] = (onnx, parameters);
                    }
                    else
                    {
                        tried.Add(evaluator.EvaluateValidation(search.Candidates[c]));
                    }
                }
                catch (OperationCanceledException)
                {
                    stopped = true;
                    break;
                }
            }
            if (tried.Count == 0)
            {
                skipped.Add(search.Method);
                continue;
            }
            // Ties go to the first setting listed, so the choice is deterministic.
            var best = tried.Aggregate((a, b) => Options.Metric.Score(b.Validation, individual) > Options.Metric.Score(a.Validation, individual) ? b : a);
            // The test split is measured once, for the chosen setting (adaptive candidates measured it already).
            var bestTest = best.Test ?? evaluator.Evaluate(best.Candidate).Test!;
            var entry = new LeaderboardEntry
            {
                Method = search.Method,
                Candidate = best.Candidate.ToString(),
                CandidatesTried = tried.Count,
                ValidationScore = Options.Metric.Score(best.Validation, individual),
                Test = bestTest,
                TestAverage = bestTest.Average,
                TestNormalized = bestTest.NormalizedAverage(individualTest),
                TestWorst = bestTest.Worst,
                MergeSeconds = methodClock.Elapsed.TotalSeconds,
                // An upscaled model (WEMoE) holds its task vectors and routers too.
                ParameterCount = adaptedModels.TryGetValue(best, out var adapted)
                    ? adapted.Parameters
                    : _experts.Pretrained.Values.Sum(t => t.numel()) + _experts.Tasks.Sum(t => _experts.Head(t.Name).Parameters.Sum(p => p.numel())),
                Setting = best.Candidate,
                Note = string.Join("; ", new[]
                {
                    tried.Count < search.Candidates.Count ? $"stopped after {tried.Count} of {search.Candidates.Count} settings" : "",
                    adaptedModels.ContainsKey(best) ? "adapted on the unlabeled test images" : "",
                }.Where(n => n.Length > 0)),
            };
            if (Options.MeasureOnnx && !stopped)
            {
                entry = adaptedModels.TryGetValue(best, out var model) && model.Onnx is not null
                    ? MeasureOnnx(entry, model.Onnx, "")
                    : MeasureOnnx(entry, evaluator, best.Candidate);
            }
            entries.Add(entry);
            progress?.Report(new MergeExperimentProgress(search.Method, m, Options.Searches.Count, search.Candidates.Count, search.Candidates.Count, entry));
        }
        return new Leaderboard(_experts.TaskNames, individualTest, Options.Metric, entries, complete: skipped.Count == 0 && !stopped, skipped);
    }

    /// <summary>Exports the chosen model (task-agnostic weights, every task's head) and times ONNX Runtime on one image.</summary>
    private LeaderboardEntry MeasureOnnx(LeaderboardEntry entry, StaticMergeEvaluator evaluator, MergeCandidate candidate)
    {
        using var merged = evaluator.Merge(candidate);
        var heads = _experts.Tasks.Select(t => new OnnxTaskHead(t.Name, _experts.Head(t.Name))).ToList();
        byte[] model = new DenseVitOnnxExporter(_experts.Config, merged.Merged, heads).Export();
        return MeasureOnnx(entry, model,
            merged.HasTaskSpecificWeights ? "ONNX holds the task-agnostic weights; per-task masks are applied in TorchSharp" : "");
    }

    /// <summary>The size of <paramref name="model"/> and the median ONNX Runtime latency of one image.</summary>
    private LeaderboardEntry MeasureOnnx(LeaderboardEntry entry, byte[] model, string note)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(model, options);
        int inputSize = _experts.Config.Channels * _experts.Config.ImageSize * _experts.Config.ImageSize;
        var input = new float[inputSize];
        using var value = OrtValue.CreateTensorValueFromMemory(input, new long[] { 1, inputSize });
        var inputs = new Dictionary<string, OrtValue> { [session.InputNames[0]] = value };
        using var runOptions = new RunOptions();
        for (int i = 0; i < 3; i++) using (session.Run(runOptions, inputs, session.OutputNames)) { }
        var times = new double[Options.LatencyRuns];
        for (int i = 0; i < times.Length; i++)
        {
            var watch = Stopwatch.StartNew();
            using (session.Run(runOptions, inputs, session.OutputNames)) { }
            times[i] = watch.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return entry with
        {
            ModelBytes = model.LongLength,
            LatencyMilliseconds = times[times.Length / 2],
            Note = string.Join("; ", new[] { entry.Note, note }.Where(n => n.Length > 0)),
        };
    }
}
