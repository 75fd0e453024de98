using System.Diagnostics;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>The settings one merge method is tried with; the best on validation represents the method on the leaderboard.</summary>
public sealed record MergeMethodSearch(string Method, IReadOnlyList<MergeCandidate> Candidates)
{
    /// <summary>
    /// Test-time adaptation steps of the comparison's adaptive methods: shortened from the 1000 of the full protocol so that a
    /// comparison of every method fits in minutes; <see cref="Adaptive"/> takes any count.
    /// </summary>
    public const int DefaultAdaptationSteps = 200;

    /// <summary>
    /// The search of one registered algorithm: every combination of its declared search grid, or its defaults; algorithms
    /// that adapt in steps (<see cref="AdaptationJob.RunsInSteps"/>) run <paramref name="adaptationSteps"/> steps, once per
    /// setting they name for comparisons (WEMoE: the paper's and softmax routing with the task-routing term). TACT reads
    /// the unlabeled images too, in one pass: it has no steps to set.
    /// </summary>
    public static MergeMethodSearch Of(IMergeAlgorithm algorithm, int adaptationSteps = DefaultAdaptationSteps)
    {
        ArgumentNullException.ThrowIfNull(algorithm);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(adaptationSteps);
        if (AdaptationJob.RunsInSteps(algorithm))
        {
            string steps = adaptationSteps.ToString(System.Globalization.CultureInfo.InvariantCulture);
            IReadOnlyList<IReadOnlyDictionary<string, string>> settings = algorithm is TestTimeAdaptationAlgorithm adaptive
                ? adaptive.ComparisonSettings
                : [new Dictionary<string, string>()];
            return new(algorithm.Name, [.. settings.Select(s => new MergeCandidate(algorithm.Name, new Dictionary<string, string>(s) { ["steps"] = steps }))]);
        }

        return new(algorithm.Name, MergeCandidate.Grid(algorithm.Name, algorithm.SearchGrid));
    }

    /// <summary>
    /// The algorithms that adapt on the unlabeled test images, each with one setting: <paramref name="steps"/> steps for
    /// test-time adaptation, defaults otherwise (TACT).
    /// </summary>
    public static IReadOnlyList<MergeMethodSearch> Adaptive(int steps = DefaultAdaptationSteps) =>
        [.. MergeAlgorithmRegistry.Default.Algorithms.Where(a => a.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages)).Select(a => Of(a, steps))];

    /// <summary>Every weight-only method with its declared grid.</summary>
    public static IReadOnlyList<MergeMethodSearch> WeightOnly { get; } =
        [.. MergeAlgorithmRegistry.Default.Algorithms.Where(a => a is WeightOnlyAlgorithm).Select(a => Of(a))];

    /// <summary>Every registered algorithm, in registry order.</summary>
    public static IReadOnlyList<MergeMethodSearch> Defaults { get; } = For(MergeAlgorithmRegistry.Default.Algorithms.Select(a => a.Name));

    /// <summary>The searches of the named algorithms, in the order given; adaptive ones run <paramref name="adaptationSteps"/> steps.</summary>
    /// <exception cref="ArgumentException">An unknown algorithm.</exception>
    public static IReadOnlyList<MergeMethodSearch> For(IEnumerable<string> methods, int adaptationSteps = DefaultAdaptationSteps, MergeAlgorithmRegistry? registry = null) =>
        [.. methods.Select(m => Of((registry ?? MergeAlgorithmRegistry.Default).Get(m.Trim()), adaptationSteps))];
}

/// <summary>Settings of a <see cref="MergeExperiment"/>: which methods and grids, the time budget, the ranking metric, ONNX measurement.</summary>
public sealed record MergeExperimentOptions
{
    /// <summary>The methods to try, each with its candidate settings (default: every registered algorithm with its search grid).</summary>
    public IReadOnlyList<MergeMethodSearch> Searches { get; init; } = MergeMethodSearch.Defaults;
    /// <summary>The default <see cref="TimeBudget"/>: a comparison of every method at the default adaptation steps fits in it here.</summary>
    public static readonly TimeSpan DefaultTimeBudget = TimeSpan.FromMinutes(30);

    /// <summary>No new candidate starts once this much time has passed (the running one finishes); null = no limit.</summary>
    public TimeSpan? TimeBudget { get; init; } = DefaultTimeBudget;
    /// <summary>What candidates are ranked by (default: average accuracy).</summary>
    public RankingMetric Metric { get; init; } = RankingMetric.Average;
    /// <summary>Export each method's chosen model to ONNX to report its size and ONNX Runtime latency.</summary>
    public bool MeasureOnnx { get; init; } = true;
    /// <summary>Runs of ONNX Runtime whose median is the reported latency (default 30).</summary>
    public int LatencyRuns { get; init; } = 30;
}

/// <summary>
/// Where an experiment is: reported before each candidate, during long candidates (<see cref="Inner"/>: adaptation steps,
/// data passes), and after each method with the finished entry and the leaderboard so far.
/// </summary>
public sealed record MergeExperimentProgress(string Method, int MethodIndex, int MethodCount, int Candidate, int CandidateCount, LeaderboardEntry? Finished)
{
    /// <summary>Progress inside the running candidate, when the algorithm reports it.</summary>
    public AlgorithmProgress? Inner { get; init; }

    /// <summary>The leaderboard of the methods finished so far (with <see cref="Finished"/>).</summary>
    public Leaderboard? Partial { get; init; }
}

/// <summary>
/// AutoML for model merging: tries each method's settings on the validation split, keeps the best per method, measures it on
/// the test split (plus merge time, size and ONNX latency) and ranks the methods, the task-agnostic ones apart from those
/// that need the task at inference. A time budget or a cancellation stops it between candidates and still returns a valid,
/// partial leaderboard.
/// </summary>
public sealed class MergeExperiment
{
    private readonly ExpertPool _experts;
    private readonly BenchmarkSources? _sources;
    private readonly MergeAlgorithmRegistry _registry;

    /// <summary>Prepares a comparison over <paramref name="experts"/>; nothing runs until <see cref="Run"/>.</summary>
    /// <param name="experts">The pool whose experts are merged and whose tasks are evaluated.</param>
    /// <param name="options">Methods, budget and metric; defaults when null.</param>
    /// <param name="sources">Where benchmark tasks' package data is; the default locations when null.</param>
    /// <param name="registry">Where methods are looked up; <see cref="MergeAlgorithmRegistry.Default"/> when null.</param>
    /// <exception cref="ArgumentException">The options name no method.</exception>
    public MergeExperiment(ExpertPool experts, MergeExperimentOptions? options = null, BenchmarkSources? sources = null, MergeAlgorithmRegistry? registry = null)
    {
        _experts = experts;
        _sources = sources;
        _registry = registry ?? MergeAlgorithmRegistry.Default;
        Options = options ?? new MergeExperimentOptions();
        if (Options.Searches.Count == 0) throw new ArgumentException("The experiment has no method to try.");
    }

    /// <summary>The experiment's settings.</summary>
    public MergeExperimentOptions Options { get; }

    /// <summary>Runs the comparison: every candidate of every method on the validation split, the best of each on the test split.</summary>
    /// <param name="progress">Receives a report before each candidate, inside long ones, and after each method; optional.</param>
    /// <param name="cancellation">Stops between candidates; the leaderboard returned is then partial.</param>
    /// <returns>The ranked leaderboard (partial when the budget ran out or the run was cancelled).</returns>
    public Leaderboard Run(IProgress<MergeExperimentProgress>? progress = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var individual = _experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Validation);
        var individualTest = _experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        using var evaluator = new CandidateEvaluator(_experts, _sources, _registry);
        var entries = new List<LeaderboardEntry>();
        var skipped = new List<string>();
        var needBase = new List<string>();
        bool stopped = false;
        for (int m = 0; m < Options.Searches.Count; m++)
        {
            var search = Options.Searches[m];
            var algorithm = _registry.Get(search.Method);
            if (algorithm.Needs.HasFlag(AlgorithmNeeds.PretrainedBase) && !_experts.HasPretrained)
            {
                needBase.Add(search.Method);
                continue;
            }
            if (stopped)
            {
                skipped.Add(search.Method);
                continue;
            }
            var methodClock = Stopwatch.StartNew();
            var tried = new List<EvaluatedCandidate>();
            // A method with one setting is measured on both splits in the same run (adaptation is too costly to repeat).
            bool single = search.Candidates.Count == 1;
            byte[][]? singleOnnx = null;
            long singleParameters = 0;
            for (int c = 0; c < search.Candidates.Count; c++)
            {
                if (cancellation.IsCancellationRequested || (Options.TimeBudget is { } budget && clock.Elapsed >= budget))
                {
                    stopped = true;
                    break;
                }
                var report = new MergeExperimentProgress(search.Method, m, Options.Searches.Count, c, search.Candidates.Count, null);
                progress?.Report(report);
                var inner = progress is null ? null : new SynchronousProgress<AlgorithmProgress>(p => progress.Report(report with { Inner = p }));
                try
                {
                    var (model, seconds) = evaluator.Run(search.Candidates[c], inner, cancellation);
                    using (model)
                    {
                        tried.Add(new EvaluatedCandidate(search.Candidates[c], evaluator.Accuracy(model, EvaluationSplit.Validation),
                            single ? evaluator.Accuracy(model, EvaluationSplit.Test) : null, seconds));
                        if (single)
                        {
                            singleParameters = model.ParameterCount;
                            if (Options.MeasureOnnx) singleOnnx = Export(model);
                        }
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
            byte[][]? onnx = singleOnnx;
            long parameters;
            double mergeSeconds = best.MergeSeconds;
            TaskAccuracies bestTest;
            if (best.Test is { } measured)
            {
                bestTest = measured;
                parameters = singleParameters;
            }
            else
            {
                // The test split is measured once, for the chosen setting.
                var report = new MergeExperimentProgress(search.Method, m, Options.Searches.Count, tried.Count, search.Candidates.Count, null);
                var inner = progress is null ? null : new SynchronousProgress<AlgorithmProgress>(p => progress.Report(report with { Inner = p }));
                MultiTaskModel model;
                double seconds;
                try
                {
                    (model, seconds) = evaluator.Run(best.Candidate, inner, cancellation);
                }
                catch (OperationCanceledException)
                {
                    stopped = true;
                    skipped.Add(search.Method);
                    continue;
                }

                using (model)
                {
                    mergeSeconds = seconds;
                    bestTest = evaluator.Accuracy(model, EvaluationSplit.Test);
                    parameters = model.ParameterCount;
                    if (Options.MeasureOnnx && !stopped) onnx = Export(model);
                }
            }
            bool needsTask = algorithm.Needs.HasFlag(AlgorithmNeeds.TaskAtInference);
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
                MergeSeconds = mergeSeconds,
                SearchSeconds = methodClock.Elapsed.TotalSeconds,
                ParameterCount = parameters,
                NeedsTaskAtInference = needsTask,
                Setting = best.Candidate,
                Note = string.Join("; ", new[]
                {
                    tried.Count < search.Candidates.Count ? $"stopped after {tried.Count} of {search.Candidates.Count} settings" : "",
                    Options.MeasureOnnx && stopped ? "ONNX size and latency not measured: the time budget ran out" : "",
                    algorithm.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages) ? "adapted on the unlabeled test images" : "",
                    algorithm.Needs.HasFlag(AlgorithmNeeds.LabeledData) ? "reads labeled training examples" : "",
                    needsTask ? "needs the task at inference: one model per task" : "",
                }.Where(n => n.Length > 0)),
            };
            if (Options.MeasureOnnx && !stopped && onnx is not null)
            {
                entry = MeasureOnnx(entry, onnx);
            }
            entries.Add(entry);
            progress?.Report(new MergeExperimentProgress(search.Method, m, Options.Searches.Count, search.Candidates.Count, search.Candidates.Count, entry)
            {
                Partial = new Leaderboard(_experts.TaskNames, individualTest, Options.Metric, entries, complete: false,
                    [.. skipped, .. Options.Searches.Skip(m + 1).Select(x => x.Method)]) { NeedBase = [.. needBase] },
            });
        }
        return new Leaderboard(_experts.TaskNames, individualTest, Options.Metric, entries, complete: skipped.Count == 0 && !stopped, skipped) { NeedBase = needBase };
    }

    /// <summary>Every part of the model as ONNX (one per task for a task-conditioned model).</summary>
    private static byte[][] Export(MultiTaskModel model) => [.. model.Parts.Select(p => p.Exporter.Export())];

    /// <summary>The size of the exported models and the median ONNX Runtime latency of one image on the first.</summary>
    private LeaderboardEntry MeasureOnnx(LeaderboardEntry entry, byte[][] models)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(models[0], options);
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
            ModelBytes = models.Sum(m => m.LongLength),
            LatencyMilliseconds = times[times.Length / 2],
            Note = string.Join("; ", new[] { entry.Note, models.Length > 1 ? $"{models.Length} ONNX models, one per task" : "" }.Where(n => n.Length > 0)),
        };
    }
}
