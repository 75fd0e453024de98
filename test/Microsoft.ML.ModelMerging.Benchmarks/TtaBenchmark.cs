using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Algorithms;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Test-time adaptation figures on the zoo, printed as Markdown for docs/benchmarks.md:
/// <list type="bullet">
/// <item><see cref="Run"/>: WEMoE TTA throughput (samples/s) of the batched per-sample routing against a per-sample loop
/// (every image through the model alone), measured in interleaved rounds in one process so both see the same machine
/// load; the peak memory a step adds; and the wall time of a full WEMoE run (1000 steps by default).</item>
/// <item><see cref="Table"/>: the accuracy table of the adaptation methods (FusionBench layout, test split) from the
/// output directories of <c>mlmerge adapt</c>, with the individual experts and the weight-only baselines (chosen on validation).</item>
/// <item><see cref="Diagnose"/>: why WEMoE falls short of the experts (oracle-routing ceiling, entropies, learned routing).</item>
/// </list>
/// The benchmark program's verbs <c>tta</c>, <c>tta-table</c> and <c>tta-diagnose</c> run them.
/// </summary>
internal static class TtaBenchmark
{
    /// <param name="zoo">The zoo directory.</param>
    /// <param name="rounds">Interleaved rounds of the throughput comparison (median reported).</param>
    /// <param name="stepsPerRound">TTA steps per mode per round.</param>
    /// <param name="fullRunSteps">Steps of the timed full WEMoE run; 0 skips it.</param>
    /// <param name="threads">libtorch intra-op threads.</param>
    public static int Run(string zoo, int rounds = 5, int stepsPerRound = 3, int fullRunSteps = 1000, int threads = 1)
    {
        set_num_threads(threads);
        var inv = CultureInfo.InvariantCulture;
        using var experts = ExpertPool.Load(zoo);
        var tasks = experts.Tasks.Select(t => new AdaptationTask(t.Name, experts.LoadData(t.Name).Test.ToTensor(), experts.Head(t.Name))).ToList();
        try
        {
            using var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts);
            var loop = new PerSampleLoop(moe);
            var options = TestTimeAdaptationOptions.ForWeightEnsembling() with { Steps = stepsPerRound };
            long samplesPerStep = (long)tasks.Count * options.BatchSizePerTask;

            // Warm-up, then interleaved rounds.
            TestTimeAdaptation.Run(moe, tasks, options with { Steps = 1 });
            TestTimeAdaptation.Run(loop, tasks, options with { Steps = 1 });
            var batched = new List<double>();
            var looped = new List<double>();
            for (int round = 0; round < rounds; round++)
            {
                batched.Add(samplesPerStep * stepsPerRound / Seconds(() => TestTimeAdaptation.Run(moe, tasks, options)));
                looped.Add(samplesPerStep * stepsPerRound / Seconds(() => TestTimeAdaptation.Run(loop, tasks, options)));
                Console.Error.WriteLine(string.Create(inv, $"round {round + 1}/{rounds}: batched {batched[^1]:F0} samples/s, loop {looped[^1]:F0} samples/s"));
            }

            long batchedBytes = PeakStepBytes(moe, tasks, options);
            long loopBytes = PeakStepBytes(loop, tasks, options);
            long mlpEntries = experts.Config.Layers * (2L * experts.Config.MlpSize * experts.Config.Width + experts.Config.MlpSize + experts.Config.Width);
            long mergedBytes = options.BatchSizePerTask * mlpEntries * sizeof(float);

            Console.WriteLine($"TTA throughput, WEMoE (depth-2 routers, {tasks.Count} tasks × {options.BatchSizePerTask} images per step), " +
                $"{threads} libtorch thread(s), {Environment.ProcessorCount} cores, {DateTime.Now:yyyy-MM-dd}");
            Console.WriteLine();
            Console.WriteLine("| mode | samples/s (median of " + rounds + ") | ratio | peak memory added by one step |");
            Console.WriteLine("|---|---:|---:|---:|");
            double batchedMedian = Median(batched), loopMedian = Median(looped);
            Console.WriteLine(string.Create(inv, $"| batched per-sample routing (bmm) | {batchedMedian:F0} | {batchedMedian / loopMedian:F2}× | {Mib(batchedBytes)} |"));
            Console.WriteLine(string.Create(inv, $"| per-sample loop | {loopMedian:F0} | 1.00× | {Mib(loopBytes)} |"));
            Console.WriteLine();
            Console.WriteLine(string.Create(inv,
                $"Per-sample merged MLP weights of one task's batch (kept for the backward pass): {options.BatchSizePerTask} × {mlpEntries:N0} floats = {Mib(mergedBytes)}."));

            if (fullRunSteps > 0)
            {
                string directory = Path.Combine(Path.GetTempPath(), "mlmerge-tta-benchmark-" + Guid.NewGuid().ToString("N"));
                try
                {
                    var clock = Stopwatch.StartNew();
                    var result = AdaptationJob.Run(experts, "wemoe", MergeParameters.Parse($"steps={fullRunSteps}"), directory,
                        new AdaptationJobCheckpoints { Every = 100, Interval = null });
                    Console.WriteLine(string.Create(inv,
                        $"Full WEMoE run, {fullRunSteps} steps (checkpoint every 100): {result.Manifest.Result!.Seconds:F0} s adapting, {clock.Elapsed.TotalSeconds:F0} s with data loading and saving " +
                        $"({1000 * result.Manifest.Result.Seconds / fullRunSteps:F0} ms per step), final loss {result.Manifest.Result.FinalLoss:F3}."));
                }
                finally
                {
                    Directory.Delete(directory, recursive: true);
                }
            }

            return 0;
        }
        finally
        {
            foreach (var task in tasks)
            {
                task.Images.Dispose();
            }
        }
    }

    /// <summary>The weight-only rows of the adaptation table, in FusionBench's order (labels of <see cref="ZooTable.Grids"/>).</summary>
    private static readonly string[] StaticRows = ["Simple average", "Task arithmetic", "TIES", "DARE (+TA)"];

    /// <summary>
    /// The accuracy table of the adaptation runs: Individual, the weight-only baselines of <see cref="StaticRows"/> with
    /// their settings chosen on validation (the zoo table's grids), then one row per (label, <c>mlmerge adapt</c> output
    /// directory) evaluated on the test split with <c>mlmerge eval</c>'s code path.
    /// </summary>
    public static int Table(string zoo, IReadOnlyList<(string Label, string Directory)> runs)
    {
        set_num_threads(1);
        using var experts = ExpertPool.Load(zoo);
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(experts.TaskNames, individual);
        table.Add("Individual", new TaskAccuracies(individual));
        using var evaluator = new CandidateEvaluator(experts);
        foreach (var (row, grid) in ZooTable.Grids.Where(g => StaticRows.Contains(g.Row)))
        {
            var (best, _) = evaluator.SelectOnValidation(grid);
            table.Add(row, best.Test!, grid.Count > 1 ? best.Candidate.ToString() : "");
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{row}: {100 * best.Test!.Average:F1}% ({best.Candidate})"));
        }

        foreach (var (label, directory) in runs)
        {
            using var adapted = AdaptedModel.Load(directory, experts);
            var accuracies = TaskAccuracy.Evaluate(experts, (task, x) => adapted.Features(task, x), EvaluationSplit.Test);
            var moe = (adapted.Parts[0].Exporter as WeightEnsemblingOnnxExporter)?.Model;
            bool perBatch = moe?.Options.BatchReduce == true;
            var manifest = AdaptationManifest.Read(directory);
            table.Add(perBatch ? label + ", routed per batch of 256 test images of one task" : label, accuracies, Describe(manifest));
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{label}: {100 * accuracies.Average:F1}% ({directory})"));
            if (perBatch)
            {
                using var perSample = PerSampleTwin(moe!, experts);
                table.Add(label + ", routed per sample", TaskAccuracy.Evaluate(experts, perSample.Forward, EvaluationSplit.Test), Describe(manifest));
            }
        }

        Console.WriteLine(table.ToMarkdown());
        return 0;
    }

    /// <summary>
    /// Why WEMoE falls short, in two measurements. (1) Its ceiling: the upscaled model with oracle routing, every block's
    /// routing weights set to the one-hot vector of the image's own task (its expert's MLPs exactly), for several λ of the
    /// task-arithmetic non-MLP tensors; the gap to the experts is what merging attention, embeddings and LayerNorms costs.
    /// (2) For trained runs (<paramref name="runs"/>), where the routers send each task's test images: the mean routing
    /// weight of every expert, per block, and how often the image's own expert gets the largest weight.
    /// </summary>
    public static int Diagnose(string zoo, IReadOnlyList<double> lambdas, IReadOnlyList<(string Label, string Directory)> runs)
    {
        set_num_threads(1);
        var inv = CultureInfo.InvariantCulture;
        using var experts = ExpertPool.Load(zoo);
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(experts.TaskNames, individual);
        table.Add("Individual", new TaskAccuracies(individual));
        var entropies = new List<(string Label, double[] PerTask)>();
        foreach (double lambda in lambdas)
        {
            using var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, new WeightEnsemblingOptions { RouterDepth = 0, Lambda = lambda });
            var perTask = new Dictionary<string, double>(StringComparer.Ordinal);
            double[] entropy = new double[experts.Tasks.Count];
            for (int t = 0; t < experts.Tasks.Count; t++)
            {
                using (no_grad())
                {
                    foreach (var parameter in moe.RouterParameters.Values)
                    {
                        parameter.zero_();
                        parameter[t] = 1f;
                    }
                }

                string name = experts.Tasks[t].Name;
                var data = experts.LoadData(name).Test;
                using var images = data.ToTensor();
                using var labels = data.LabelsToTensor();
                perTask[name] = Training.ClassifierEvaluation.Accuracy(x => experts.Head(name).Forward(moe.Forward(x)), images, labels);
                entropy[t] = MeanEntropy(x => experts.Head(name).Forward(moe.Forward(x)), images);
            }

            entropies.Add(($"oracle routing, λ={lambda.ToString(inv)}", entropy));
            table.Add(string.Create(inv, $"oracle routing, non-MLP task arithmetic λ={lambda}"), new TaskAccuracies(perTask));
            CrossRouting(experts, moe, lambda);
        }

        Console.WriteLine(table.ToMarkdown());
        Console.WriteLine("Share of each task vector's squared norm in the block MLPs (the part WEMoE upscales; the rest is merged by task arithmetic)");
        Console.WriteLine();
        Console.WriteLine("| | " + string.Join(" | ", experts.TaskNames) + " |");
        Console.WriteLine("|---|" + string.Concat(experts.TaskNames.Select(_ => "---:|")) + "");
        Console.WriteLine("| MLP share | " + string.Join(" | ", experts.TaskNames.Select(name =>
        {
            double mlp = 0, all = 0;
            foreach (var (tensor, theta0) in experts.Pretrained)
            {
                using var scope = NewDisposeScope();
                double squared = (experts.Expert(name)[tensor] - theta0).square().sum().item<float>();
                all += squared;
                mlp += tensor.Contains(".mlp.", StringComparison.Ordinal) ? squared : 0;
            }

            return (100 * mlp / all).ToString("F0", inv) + "%";
        })) + " |");
        Console.WriteLine();
        foreach (var (label, directory) in runs)
        {
            using var adapted = AdaptedModel.Load(directory, experts);
            entropies.Add((label, [.. experts.TaskNames.Select(name =>
            {
                using var images = experts.LoadData(name).Test.ToTensor();
                return MeanEntropy(x => experts.Head(name).Forward(adapted.Features(x)), images);
            })]));
        }

        Console.WriteLine("Mean prediction entropy on the test images (the quantity TTA minimises, summed over tasks in the last column)");
        Console.WriteLine();
        Console.WriteLine("| model | " + string.Join(" | ", experts.TaskNames) + " | sum |");
        Console.WriteLine("|---|" + string.Concat(experts.TaskNames.Select(_ => "---:|")) + "---:|");
        foreach (var (label, perTask) in entropies)
        {
            Console.WriteLine($"| {label} | {string.Join(" | ", perTask.Select(v => v.ToString("F3", inv)))} | {perTask.Sum().ToString("F3", inv)} |");
        }

        Console.WriteLine();
        foreach (var (label, directory) in runs)
        {
            using var adapted = AdaptedModel.Load(directory, experts);
            if ((adapted.Parts[0].Exporter as WeightEnsemblingOnnxExporter)?.Model is not { } moe)
            {
                continue;
            }

            Console.WriteLine($"Routing of {label} on the test images (rows: task of the images; columns: mean weight of each expert, blocks 0..{experts.Config.Layers - 1}; own: share of images whose own expert weighs most)");
            Console.WriteLine();
            Console.WriteLine("| images of | block | " + string.Join(" | ", experts.TaskNames) + " | own |");
            Console.WriteLine("|---|---:|" + string.Concat(experts.TaskNames.Select(_ => "---:|")) + "---:|");
            for (int t = 0; t < experts.Tasks.Count; t++)
            {
                string name = experts.Tasks[t].Name;
                using var images = experts.LoadData(name).Test.ToTensor();
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var routing = cat([.. Enumerable.Range(0, (int)Math.Ceiling(images.shape[0] / 250.0))
                    .Select(b => moe.ForwardWithRouting(images.narrow(0, b * 250, Math.Min(250, images.shape[0] - (b * 250)))).Routing)], 1);  // [L,N,E]
                for (int block = 0; block < experts.Config.Layers; block++)
                {
                    Tensor r = routing[block];
                    double[] mean = r.mean([0]).data<float>().Select(v => (double)v).ToArray();
                    double own = (r.argmax(1) == t).to(ScalarType.Float32).mean().item<float>();
                    Console.WriteLine(string.Create(inv, $"| {name} | {block} | {string.Join(" | ", mean.Select(v => v.ToString("F2", inv)))} | {100 * own:F0}% |"));
                }
            }

            Console.WriteLine();
        }

        return 0;
    }

    /// <summary>
    /// Entropy minimisation can only route right if, for a task's images, its own expert is the one that makes the task's
    /// head most confident. Every task's test images through every single expert's MLPs (one-hot routing, task t's head):
    /// mean entropy and accuracy, and per task whether the lowest-entropy expert is its own.
    /// </summary>
    private static void CrossRouting(ExpertPool experts, WeightEnsemblingMoE moe, double lambda)
    {
        var inv = CultureInfo.InvariantCulture;
        var names = experts.TaskNames;
        int count = names.Count;
        var entropy = new double[count, count];
        var accuracy = new double[count, count];
        var tests = names.Select(name => experts.LoadData(name).Test).Select(data => (Images: data.ToTensor(), Labels: data.LabelsToTensor())).ToArray();
        for (int e = 0; e < count; e++)
        {
            using (no_grad())
            {
                foreach (var parameter in moe.RouterParameters.Values)
                {
                    parameter.zero_();
                    parameter[e] = 1f;
                }
            }

            for (int t = 0; t < count; t++)
            {
                var (images, labels) = tests[t];
                using var logits = Training.ClassifierEvaluation.MapBatches(x => experts.Head(names[t]).Forward(moe.Forward(x)), images);
                using var predicted = logits.argmax(1);
                accuracy[t, e] = predicted.eq(labels).to(ScalarType.Float32).mean().item<float>();
                entropy[t, e] = TestTimeAdaptation.MeanEntropy(logits).item<float>();
            }
        }

        foreach (var (images, labels) in tests)
        {
            images.Dispose();
            labels.Dispose();
        }

        Console.WriteLine(string.Create(inv, $"Cross routing at λ={lambda}: images of each task (rows) through one expert's MLPs (columns), task's own head; mean entropy / accuracy %; * = lowest entropy of the row"));
        Console.WriteLine();
        Console.WriteLine("| images of | " + string.Join(" | ", names) + " | lowest entropy is own |");
        Console.WriteLine("|---|" + string.Concat(names.Select(_ => "---:|")) + "---|");
        for (int t = 0; t < count; t++)
        {
            int lowest = Enumerable.Range(0, count).MinBy(e => entropy[t, e]);
            Console.WriteLine($"| {names[t]} | " + string.Join(" | ", Enumerable.Range(0, count).Select(e =>
                string.Create(inv, $"{entropy[t, e]:F2} / {100 * accuracy[t, e]:F0}{(e == lowest ? "*" : "")}"))) + $" | {(lowest == t ? "yes" : "no")} |");
        }

        Console.WriteLine();
    }

    /// <summary>The same routers in a model that routes every sample on its own (for routers trained with batch reduction).</summary>
    private static WeightEnsemblingMoE PerSampleTwin(WeightEnsemblingMoE trained, ExpertPool experts)
    {
        var twin = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, trained.Options with { BatchReduce = false });
        using var noGrad = no_grad();
        foreach (var (name, parameter) in trained.RouterParameters)
        {
            twin.RouterParameters[name].copy_(parameter);
        }

        return twin;
    }

    private static double MeanEntropy(Func<Tensor, Tensor> logits, Tensor images)
    {
        using var all = Training.ClassifierEvaluation.MapBatches(logits, images);
        return TestTimeAdaptation.MeanEntropy(all).item<float>();
    }

    private static string Describe(AdaptationManifest manifest) =>
        string.Join(" ", manifest.Settings.Where(kv => kv.Key is not ("seed" or "batch")).Select(kv => $"{kv.Key}={kv.Value}"));

    private static double Seconds(Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        return clock.Elapsed.TotalSeconds;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string Mib(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("F1", CultureInfo.InvariantCulture) + " MiB";

    /// <summary>
    /// Peak resident memory one TTA step adds: freed heap is returned to the OS (malloc_trim), the kernel's high-water mark
    /// is reset (/proc/self/clear_refs), one step runs, and the new high-water mark minus the resident size before is the
    /// memory the step touched at its peak. Linux only; -1 elsewhere.
    /// </summary>
    private static long PeakStepBytes(IAdaptableModel model, IReadOnlyList<AdaptationTask> tasks, TestTimeAdaptationOptions options)
    {
        if (!OperatingSystem.IsLinux())
        {
            return -1;
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();
        _ = MallocTrim(0);
        File.WriteAllText("/proc/self/clear_refs", "5");
        long before = StatusKiB("VmRSS");
        TestTimeAdaptation.Run(model, tasks, options with { Steps = 1 });
        return (StatusKiB("VmHWM") - before) * 1024;
    }

    private static long StatusKiB(string field)
    {
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    }

    [DllImport("libc.so.6", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    /// <summary>The same WEMoE run one image at a time: each image gets its own routing weights from a batch of one.</summary>
    private sealed class PerSampleLoop(WeightEnsemblingMoE moe) : IAdaptableModel
    {
        public IReadOnlyDictionary<string, Parameter> AdaptedParameters => moe.RouterParameters;

        public IReadOnlyDictionary<string, string> Metadata => moe.Metadata;

        public Tensor Forward(Tensor images) => cat([.. Enumerable.Range(0, (int)images.shape[0]).Select(i => moe.Forward(images.narrow(0, i, 1)))], 0);
    }
}
