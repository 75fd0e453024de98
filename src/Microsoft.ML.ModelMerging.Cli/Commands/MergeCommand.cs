using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary><c>mlmerge merge</c>: a streaming, bounded-memory merge of checkpoints with any weight-only method.</summary>
internal static class MergeCommand
{
    /// <summary>Shorthand options that map to method parameters of the same name (given only when the user sets them).</summary>
    private static readonly (string Option, string Parameter, string Help)[] ParameterShorthands =
    {
        ("--lambda", "lambda", "scaling λ of the merged task vector"),
        ("--keep", "keep", "TIES: fraction of each task vector kept by the trim"),
        ("--trim", "trim", "TIES: global | per-tensor"),
        ("--merge-func", "merge-func", "TIES: sum | mean"),
        ("--drop-rate", "drop-rate", "DARE: probability p of dropping an entry"),
        ("--seed", "seed", "DARE: seed of the drop masks"),
        ("--then", "then", "DARE: task-arithmetic | ties"),
        ("--min-tasks", "min-tasks", "consensus: keep weights selected by at least k tasks"),
    };

    public static Command Create()
    {
        var method = new Option<string?>("--method") { Description = "Merge method (see --list)." };
        var baseModel = new Option<string?>("--base") { Description = "The pre-trained checkpoint θ0." };
        var experts = new Option<string[]>("--expert") { Description = "A fine-tuned checkpoint, or a LoRA adapter folder (PEFT layout: its task vector is the densified ΔW; with --param adapter-space=factors, its factors A and B, and --out is then the merged adapter folder) (repeat for each expert).", AllowMultipleArgumentsPerToken = false };
        var weights = new Option<double[]>("--expert-weight") { Description = "Weight w_i of each expert's task vector, in --expert order (default 1)." };
        var output = new Option<string?>("--out") { Description = "Output .safetensors file, or a directory for sharded output." };
        var parameters = new Option<string[]>("--param") { Description = "Any method parameter as name=value (repeatable)." };
        var dtype = new Option<string?>("--dtype") { Description = "Stored dtype of floating outputs: f32 | f16 | bf16 (default: the base's)." };
        var exclude = new Option<string[]>("--exclude") { Description = "Regex of tensor names copied from the base instead of merged (repeatable; heads, position ids and integer tensors are always excluded)." };
        var shardSize = new Option<string?>("--shard-size") { Description = "Split the output into shards of at most this size, e.g. 5GB." };
        var allowMissing = new Option<bool>("--allow-missing") { Description = "Let experts lack tensors (unchanged there) or hold extra ones (ignored)." };
        var config = new Option<string?>("--config") { Description = "Read the whole job from a YAML or JSON file (command-line options are then not allowed)." };
        var list = new Option<bool>("--list") { Description = "List the methods, their parameters and defaults." };
        var shorthands = ParameterShorthands.Select(s => (Option: new Option<string?>(s.Option) { Description = s.Help }, s.Parameter)).ToList();

        var command = new Command("merge", "Merge fine-tuned checkpoints into one, streaming tensor by tensor.")
        {
            method, baseModel, experts, weights, output, parameters, dtype, exclude, shardSize, allowMissing, config, list,
        };
        foreach (var (option, _) in shorthands) command.Options.Add(option);

        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            if (parse.GetValue(list))
            {
                writer.WriteLine(MergeAlgorithmRegistry.Default.Describe());
                writer.WriteLine();
                writer.WriteLine("merge streams the methods that need nothing but the weights; run the others with `mlmerge adapt --zoo <pool> --method <name>`.");
                return Task.FromResult(0);
            }
            MergeJob job;
            if (parse.GetValue(config) is { } configPath)
            {
                // The file holds the whole job; a command-line option next to it would be silently ignored otherwise.
                var jobOptions = new Option[] { method, baseModel, experts, weights, output, parameters, dtype, exclude, shardSize, allowMissing }
                    .Concat(shorthands.Select(s => (Option)s.Option));
                var given = jobOptions.Where(o => parse.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();
                if (given.Count > 0)
                    throw new ArgumentException($"--config holds the whole job: do not also pass {string.Join(", ", given)}.");
                job = MergeJob.FromConfigFile(configPath);
            }
            else
            {
                var expertPaths = parse.GetValue(experts) ?? Array.Empty<string>();
                var expertWeights = parse.GetValue(weights) ?? Array.Empty<double>();
                if (expertWeights.Length != 0 && expertWeights.Length != expertPaths.Length)
                    throw new ArgumentException($"{expertWeights.Length} --expert-weight value(s) for {expertPaths.Length} --expert(s).");
                var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                foreach (var assignment in MergeParameters.Parse(parse.GetValue(parameters) ?? Array.Empty<string>()).Values)
                    values[assignment.Key] = assignment.Value;
                foreach (var (option, parameter) in shorthands)
                    if (parse.GetValue(option) is { } value) values[parameter] = value;
                job = new MergeJob
                {
                    Method = parse.GetValue(method) ?? throw new ArgumentException("--method is required (see --list)."),
                    Base = parse.GetValue(baseModel) ?? throw new ArgumentException("--base is required."),
                    Experts = expertPaths.Select((p, i) => new MergeJobExpert(p, expertWeights.Length == 0 ? 1.0 : expertWeights[i])).ToList(),
                    Output = parse.GetValue(output) ?? throw new ArgumentException("--out is required."),
                    Parameters = values,
                    OutputDType = parse.GetValue(dtype) is { } d ? SafeTensorsDTypes.ParseFloatOption(d) : null,
                    Exclude = parse.GetValue(exclude) ?? Array.Empty<string>(),
                    MaxShardBytes = parse.GetValue(shardSize) is { } s ? CheckpointWriter.ParseSize(s) : null,
                    AllowMissing = parse.GetValue(allowMissing),
                };
                if (MergeAlgorithmRegistry.Default.TryGet(job.Method, out var algorithm) && algorithm is not WeightOnlyAlgorithm)
                    throw new ArgumentException(
                        $"--method {algorithm.Name} needs {MergeAlgorithmRegistry.NeedsText(algorithm.Needs)}, which a checkpoint merge does not have: " +
                        $"run it on a pool with `mlmerge adapt --zoo <pool> --method {algorithm.Name}`.");
            }
            // --out in a directory that does not exist: the directory is created (the library writer does) and the
            // summary says so, so a typo in the path is visible rather than silent.
            string outputDirectory = job.Output.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
                ? Path.GetDirectoryName(Path.GetFullPath(job.Output))! : Path.GetFullPath(job.Output);
            bool createsDirectory = !Directory.Exists(outputDirectory);
            var report = ConsoleProgress.Run<StreamingMergeProgress, StreamingMergeReport>(
                parse.InvocationConfiguration.Output, "merging",
                p => ($"{p.Phase} pass {p.Pass + 1}/{p.PassCount}", p.Tensor + 1, p.TensorCount),
                progress => job.Run(progress, cancellation));
            if (createsDirectory) writer.WriteLine($"created directory {outputDirectory}");
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{job.Method}: {report.MergedTensors.Count} tensors merged, {report.CopiedTensors.Count} copied from the base, {report.Passes} pass(es) → {report.OutputPath}"));
            return Task.FromResult(0);
        });
        return command;
    }
}
