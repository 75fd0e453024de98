using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge adapt</c>: WEMoE, E-WEMoE and AdaMerging by test-time adaptation on the zoo's unlabeled test images, or
/// Fisher / RegMean on labeled training examples, into a resumable output directory that <c>mlmerge eval</c> reads.
/// </summary>
internal static class AdaptCommand
{
    public static Command Create()
    {
        var zoo = new Option<string>("--zoo") { Description = "Zoo directory (pre-trained model, experts, heads, task data).", DefaultValueFactory = _ => "zoo" };
        var method = new Option<string>("--method") { Description = string.Join(" | ", AdaptationMethods.All), Required = true };
        var tasks = new Option<string[]>("--task") { Description = "Only these tasks (default: all of the zoo's)." };
        var steps = new Option<int>("--steps") { Description = "Test-time adaptation steps.", DefaultValueFactory = _ => TestTimeAdaptationOptions.DefaultSteps };
        var learningRate = new Option<double?>("--lr") { Description = "Adam learning rate (default: WEMoE 1e-4, AdaMerging 1e-3)." };
        var batch = new Option<int>("--batch") { Description = "Unlabeled test images per task per step.", DefaultValueFactory = _ => TestTimeAdaptationOptions.DefaultBatchSizePerTask };
        var routerLayers = new Option<int>("--router-layers") { Description = "WEMoE router depth: 0, 1 or 2.", DefaultValueFactory = _ => WeightEnsemblingOptions.DefaultRouterDepth };
        var keep = new Option<double>("--keep") { Description = "E-WEMoE: fraction of each MLP task vector kept.", DefaultValueFactory = _ => WeightEnsemblingOptions.DefaultEfficientKeep };
        var batchReduce = new Option<bool>("--batch-reduce") { Description = "WEMoE: route on the batch mean of the routing weights (FusionBench's granularity) instead of per sample, in training and in eval." };
        var lambda = new Option<double>("--lambda") { Description = "WEMoE task-arithmetic λ / AdaMerging initial coefficient.", DefaultValueFactory = _ => WeightEnsemblingOptions.DefaultLambda };
        var examples = new Option<int>("--examples") { Description = "Fisher / RegMean: training examples per task.", DefaultValueFactory = _ => DataMerging.FisherMergeOptions.DefaultExamplesPerTask };
        var seed = new Option<int>("--seed") { Description = "Seed of router initialisation and batch order (or of the training examples).", DefaultValueFactory = _ => 0 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Write a resumable checkpoint every N steps (0: only at the end).", DefaultValueFactory = _ => 100 };
        var threads = new Option<int>("--threads") { Description = "libtorch threads; 1 is fastest for the zoo's small models on a shared machine.", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Output directory; running again with the same settings resumes it.", Required = true };
        var command = new Command("adapt", "Adapt a merged model to the zoo's tasks: test-time adaptation (WEMoE, E-WEMoE, AdaMerging) or Fisher / RegMean merging.")
        {
            zoo, method, tasks, steps, learningRate, batch, routerLayers, keep, batchReduce, lambda, examples, seed, checkpointEvery, threads, output,
        };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            if (parse.GetValue(threads) is var count and <= 0)
            {
                throw new ArgumentException($"--threads must be positive (got {count}).");
            }

            var options = new AdaptationJobOptions
            {
                Method = AdaptationMethods.Parse(parse.GetValue(method)!),
                Steps = parse.GetValue(steps),
                LearningRate = parse.GetValue(learningRate),
                BatchSizePerTask = parse.GetValue(batch),
                RouterDepth = parse.GetValue(routerLayers),
                Keep = parse.GetValue(keep),
                BatchReduce = parse.GetValue(batchReduce),
                Lambda = parse.GetValue(lambda),
                ExamplesPerTask = parse.GetValue(examples),
                Seed = parse.GetValue(seed),
                CheckpointEvery = parse.GetValue(checkpointEvery),
            };
            options.Validate();
            string directory = parse.GetValue(output)!;
            using var experts = ExpertPool.Load(parse.GetValue(zoo)!, parse.GetValue(tasks));
            int previousThreads = TorchSharp.torch.get_num_threads();
            TorchSharp.torch.set_num_threads(parse.GetValue(threads));
            AdaptationJobResult result;
            try
            {
                result = ConsoleProgress.Run<AdaptationJobProgress, AdaptationJobResult>(writer, options.Method.Name(),
                    p => (p.Stage, p.Done, p.Total),
                    progress => AdaptationJob.Run(experts, options, directory, null, progress, cancellation));
            }
            finally
            {
                TorchSharp.torch.set_num_threads(previousThreads);
            }

            var manifest = result.Manifest;
            var outcome = manifest.Result!;
            var inv = CultureInfo.InvariantCulture;
            string what = !options.Method.IsTestTimeAdaptation()
                ? $"{options.ExamplesPerTask} training examples per task"
                : result.StartStep > 0
                    ? $"{outcome.CompletedSteps} steps (resumed at step {result.StartStep})"
                    : $"{outcome.CompletedSteps} steps";
            string loss = outcome.FinalLoss is double l ? string.Create(inv, $", final loss {l:F4}") : "";
            writer.WriteLine(result.AlreadyComplete
                ? string.Create(inv, $"{manifest.Method} on {manifest.Tasks.Count} tasks: already complete ({what}{loss}) → {Path.GetFullPath(directory)}")
                : string.Create(inv, $"{manifest.Method} on {manifest.Tasks.Count} tasks: {what} in {outcome.Seconds:F1} s{loss} → {Path.GetFullPath(directory)}"));
            writer.WriteLine($"result: {string.Join(", ", outcome.Files)}; evaluate with `mlmerge eval --model {directory} --zoo {parse.GetValue(zoo)}`");
            return Task.FromResult(0);
        });
        return command;
    }
}
