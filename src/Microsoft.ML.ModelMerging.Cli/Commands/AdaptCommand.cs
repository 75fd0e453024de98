using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge adapt</c>: any registered algorithm that learns from data, on a pool: test-time adaptation on the unlabeled
/// test images (WEMoE, E-WEMoE, AdaMerging; TACT measures its corrections on them) or labeled training examples (Fisher, RegMean), into a resumable output
/// directory that <c>mlmerge eval</c> and <c>export-onnx</c> read. Options are shorthands for the algorithm's parameters.
/// </summary>
internal static class AdaptCommand
{
    public static Command Create()
    {
        var dataMethods = MergeAlgorithmRegistry.Default.Algorithms
            .Where(a => (a.Needs & (AlgorithmNeeds.UnlabeledImages | AlgorithmNeeds.LabeledData)) != 0).Select(a => a.Name);
        var zoo = new Option<string>("--zoo") { Description = "Pool directory (zoo or your own: pre-trained model, experts, heads, task data).", DefaultValueFactory = _ => "zoos/default" };
        var method = new Option<string>("--method") { Description = string.Join(" | ", dataMethods) + " (parameters: mlmerge merge --list)", Required = true };
        var tasks = new Option<string[]>("--task") { Description = "Only these tasks (default: all of the pool's)." };
        // Shorthands for parameters, passed only when given, so each method keeps its own defaults.
        var shorthands = new (Option Option, string Parameter)[]
        {
            (new Option<int>("--steps") { Description = "Test-time adaptation steps [1000]." }, "steps"),
            (new Option<double>("--lr") { Description = "Adam learning rate [WEMoE 1e-4, AdaMerging 1e-3]." }, "learning-rate"),
            (new Option<int>("--batch") { Description = "Unlabeled test images per task per step [16]." }, "batch"),
            (new Option<int>("--router-layers") { Description = "WEMoE router depth: 0, 1 or 2 [2]." }, "router-depth"),
            (new Option<double>("--keep") { Description = "E-WEMoE: fraction of each MLP task vector kept [0.1]; TACT: the TIES base's kept fraction [0.2]." }, "keep"),
            (new Option<string>("--routing") { Description = "WEMoE routing weights: linear (the routers' raw outputs, the paper's) or softmax (convex combinations of the experts' MLPs) [linear]." }, "routing"),
            (new Option<bool>("--batch-reduce") { Description = "WEMoE: route on the batch mean of the routing weights (FusionBench's granularity) instead of per sample." }, "batch-reduce"),
            (new Option<double>("--lambda") { Description = "WEMoE task-arithmetic λ / AdaMerging initial coefficient / TACT base method's λ [0.3]." }, "lambda"),
            (new Option<int>("--examples") { Description = "Fisher / RegMean: training examples per task; TACT: unlabeled images per task [256]." }, "examples"),
            (new Option<string>("--base-method") { Description = "TACT: the weight-only merge it corrects: " + string.Join(", ", TactAlgorithm.BaseMethods) + " [simple-average]." }, "base-method"),
            (new Option<double>("--epsilon") { Description = "TACT: ε added to the merged model's variance [1e-8]." }, "epsilon"),
            (new Option<string>("--statistics") { Description = "TACT: channel (per channel over all tokens, the paper's) or token (per channel and token position) [channel]." }, "statistics"),
            (new Option<int>("--seed") { Description = "Seed of router initialisation and batch order (or of the training examples) [0]." }, "seed"),
        };
        var parameters = new Option<string[]>("--param") { Description = "Any parameter of the method as name=value (see mlmerge merge --list)." };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Write a resumable checkpoint every N steps (0: only at the end); one is also written every 30 s.", DefaultValueFactory = _ => 100 };
        var threads = new Option<int>("--threads") { Description = "libtorch threads; 1 is fastest for the zoo's small models on a shared machine.", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Output directory; running again with the same settings resumes it.", Required = true };
        var command = new Command("adapt", "Run a merge algorithm that learns from data on a pool: test-time adaptation (WEMoE, E-WEMoE, AdaMerging), TACT's per-task activation correction, or Fisher / RegMean merging.")
        {
            zoo, method, tasks, parameters, checkpointEvery, threads, output,
        };
        foreach (var (option, _) in shorthands) command.Options.Add(option);
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            if (parse.GetValue(threads) is var count and <= 0)
            {
                throw new ArgumentException($"--threads must be positive (got {count}).");
            }

            if (parse.GetValue(checkpointEvery) is var every and < 0)
            {
                throw new ArgumentException($"--checkpoint-every must be non-negative (got {every}).");
            }

            var algorithm = MergeAlgorithmRegistry.Default.Get(parse.GetValue(method)!);
            var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var (name, value) in MergeParameters.Parse(parse.GetValue(parameters) ?? []).Values) values[name] = value;
            foreach (var (option, parameter) in shorthands)
            {
                if (parse.GetResult(option) is not { Implicit: false } given) continue;
                if (!algorithm.Parameters.Any(p => p.Name == parameter))
                {
                    throw new ArgumentException($"{option.Name} does not apply to {algorithm.Name} (its parameters: {string.Join(", ", algorithm.Parameters.Select(p => p.Name))}).");
                }

                object? value = given.GetValueOrDefault<object>();
                values[parameter] = value switch
                {
                    bool flag => flag ? "true" : "false",
                    IFormattable number => number.ToString(null, CultureInfo.InvariantCulture),
                    _ => value?.ToString() ?? "",
                };
            }

            var settings = new MergeParameters(values);
            string directory = parse.GetValue(output)!;
            // The pool and the settings are checked before the output directory is touched.
            using var pool = ExpertPool.Load(parse.GetValue(zoo)!, parse.GetValue(tasks));
            settings.Resolve(algorithm.Name, algorithm.Parameters);
            int previousThreads = TorchSharp.torch.get_num_threads();
            TorchSharp.torch.set_num_threads(parse.GetValue(threads));
            AdaptationJobResult result;
            try
            {
                result = ConsoleProgress.Run<AdaptationJobProgress, AdaptationJobResult>(writer, algorithm.Name,
                    p => (p.Stage, p.Done, p.Total),
                    progress => AdaptationJob.Run(pool, algorithm.Name, settings, directory, new AdaptationJobCheckpoints { Every = parse.GetValue(checkpointEvery) },
                        null, progress, cancellation));
            }
            catch (OperationCanceledException) when (File.Exists(Path.Combine(directory, AdaptationJob.CheckpointFileName)))
            {
                throw new StoppedWithResultsException($"{directory} keeps the last checkpoint: run the same command again to resume from it.");
            }
            finally
            {
                TorchSharp.torch.set_num_threads(previousThreads);
            }

            var manifest = result.Manifest;
            var outcome = manifest.Result!;
            var inv = CultureInfo.InvariantCulture;
            bool adapts = AdaptationJob.RunsInSteps(algorithm);
            string what = !adapts
                ? $"{manifest.Data}"
                : result.StartStep > 0
                    ? $"{outcome.CompletedSteps} steps (resumed at step {result.StartStep})"
                    : $"{outcome.CompletedSteps} steps";
            string loss = outcome.FinalLoss is double l ? string.Create(inv, $", final loss {l:F4}") : "";
            writer.WriteLine(result.AlreadyComplete
                ? string.Create(inv, $"{manifest.Method} on {manifest.Tasks.Count} tasks: already complete ({what}{loss}) → {Path.GetFullPath(directory)}")
                : string.Create(inv, $"{manifest.Method} on {manifest.Tasks.Count} tasks: {what} in {outcome.Seconds:F1} s{loss} → {Path.GetFullPath(directory)}"));
            writer.WriteLine($"result: {string.Join(", ", outcome.Files)}; evaluate with `mlmerge eval --model {MlmergeCommand.Quote(directory)} --zoo {MlmergeCommand.Quote(parse.GetValue(zoo)!)}`");
            return Task.FromResult(0);
        });
        return command;
    }
}
