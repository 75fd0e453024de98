using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Onnx;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge export-onnx --model &lt;backbone&gt; --head &lt;task&gt;=&lt;head.safetensors&gt; [--head ...] --out model.onnx [--fp16]</c>:
/// one ONNX model with input <c>pixels</c> and one <c>scores_&lt;task&gt;</c> output per head.
/// <c>mlmerge export-onnx --wemoe-routers &lt;routers.safetensors|dir&gt; --zoo &lt;dir&gt; [--task ...] --out model.onnx
/// [--fp16 | --fp16-task-vectors]</c>: a WEMoE / E-WEMoE model rebuilt from the zoo with trained routers, one output per expert's task.
/// <c>mlmerge export-onnx --model &lt;checkpoint|adapt dir&gt; --zoo &lt;dir&gt; --out model.onnx</c>: every head of the zoo, or the
/// result of <c>mlmerge adapt</c> (WEMoE routers, or the merged backbone of AdaMerging, Fisher and RegMean).
/// </summary>
internal static class ExportOnnxCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Backbone checkpoint (.safetensors file, sharded index or directory; ours or Hugging Face CLIP with config.json)." };
        var heads = new Option<string[]>("--head") { Description = "A task head as <task>=<head.safetensors> (repeat for each task; outputs follow this order)." };
        var output = new Option<string?>("--out") { Description = "Output .onnx file (written to a temporary name, then renamed)." };
        var fp16 = new Option<bool>("--fp16") { Description = "Store weight matrices as float16 (half the size; computation stays float32)." };
        var scores = new Option<string>("--scores") { Description = "What scores_<task> holds: probabilities (softmax, default) | logits.", DefaultValueFactory = _ => "probabilities" };
        var noFeatures = new Option<bool>("--no-features") { Description = "Leave out the 'features' output." };
        var routers = new Option<string?>("--wemoe-routers")
        {
            Description = "Export a WEMoE model instead: its trained routers (.safetensors from training or an adaptation checkpoint, or a directory holding routers.safetensors); needs --zoo.",
        };
        var zoo = new Option<string?>("--zoo")
        {
            Description = "The zoo directory whose heads are exported (every task) when no --head is given; with --wemoe-routers, the zoo whose pre-trained model, experts and heads the routers were trained on.",
        };
        var tasks = new Option<string[]>("--task")
        {
            Description = "With --wemoe-routers: the experts' tasks in router order (only needed when the router file does not record them and they are not all the zoo's tasks). "
                + "With a TACT result (--model <adapt dir>): only these of its tasks (default: every task it corrected). "
                + "With a LoRA adapter folder: the heads of these tasks of --zoo (default: the tasks whose expert it is or that it merged).",
        };
        var allHeads = new Option<bool>("--all-heads") { Description = "With --zoo: every task's head, not only those of the experts the merge recorded." };
        var fp16TaskVectors = new Option<bool>("--fp16-task-vectors", "--fp16-experts") { Description = "With a WEMoE model: store only the MLP task vectors as float16 (--fp16 stores every weight so)." };
        var command = new Command("export-onnx", "Export a Vision Transformer checkpoint and its task heads, or a WEMoE model, as one ONNX model (a TACT result: one per task, <out>.<task>.onnx).")
        {
            model, heads, output, fp16, scores, noFeatures, routers, zoo, tasks, fp16TaskVectors, allHeads,
        };
        command.SetAction(parse =>
        {
            var options = new VitOnnxExportOptions
            {
                WeightPrecision = parse.GetValue(fp16) ? OnnxWeightPrecision.Float16 : OnnxWeightPrecision.Float32,
                Scores = parse.GetValue(scores)!.Trim().ToLowerInvariant() switch
                {
                    "probabilities" => OnnxScoreKind.Probabilities,
                    "logits" => OnnxScoreKind.Logits,
                    var other => throw new ArgumentException($"--scores must be 'probabilities' or 'logits' (got '{other}')."),
                },
                IncludeFeatures = !parse.GetValue(noFeatures),
            };
            string? routersPath = parse.GetValue(routers);
            string[] taskNames = parse.GetValue(tasks) ?? [];
            string? modelPath = parse.GetValue(model);
            string[] headSpecs = parse.GetValue(heads) ?? [];
            string? zooPath = parse.GetValue(zoo);

            // The output directory of `mlmerge adapt`: WEMoE's routers, or the merged backbone of the other methods.
            if (routersPath is null && modelPath is not null && AdaptationManifest.Exists(modelPath)
                && AdaptationManifest.Read(modelPath).Result is null)
            {
                throw new ArgumentException($"{modelPath} holds an `mlmerge adapt` run that has not finished: run the same command again to complete it, then export.");
            }

            // WEMoE's task vectors are the only weights --fp16-experts picks out; anything else would be exported unchanged.
            bool routed = routersPath is not null || (modelPath is not null && Directory.Exists(modelPath) && File.Exists(Path.Combine(modelPath, WeightEnsemblingOnnxExporter.RoutersFileName)));
            if (parse.GetValue(fp16TaskVectors) && !routed)
                throw new ArgumentException("--fp16-experts stores a WEMoE model's MLP task vectors as float16; this model has none (--fp16 stores every weight matrix so).");

            if (routersPath is null && modelPath is not null && AdaptationManifest.Exists(modelPath)
                && AdaptationManifest.Read(modelPath).Result!.Files.Any(CorrectedVitOnnxExporter.IsCorrectionFile))
            {
                return ExportCorrected(parse, modelPath, zooPath, headSpecs, taskNames, parse.GetValue(output), options);
            }

            if (routersPath is null && modelPath is not null && LowRank.PeftAdapterFolder.IsAdapter(modelPath))
            {
                return ExportAdapter(parse, modelPath, zooPath, headSpecs, taskNames, parse.GetValue(output), options, parse.GetValue(allHeads));
            }

            if (routersPath is null && modelPath is not null && Directory.Exists(modelPath) && File.Exists(Path.Combine(modelPath, WeightEnsemblingOnnxExporter.RoutersFileName)))
            {
                routersPath = modelPath;
                modelPath = null;
            }

            if (routersPath is not null)
            {
                return ExportWeightEnsembling(parse, routersPath, zooPath, modelPath, headSpecs, taskNames,
                    parse.GetValue(output), options, parse.GetValue(fp16TaskVectors));
            }

            if (modelPath is not null && Directory.Exists(modelPath) && File.Exists(Path.Combine(modelPath, Onnx.DenseVitOnnxExporter.WeightsFileName)))
            {
                modelPath = Path.Combine(modelPath, Onnx.DenseVitOnnxExporter.WeightsFileName);
            }

            if (headSpecs.Length == 0 && zooPath is not null)
            {
                // The heads of the tasks whose experts the merge recorded (every head of the pool when it recorded none,
                // or with --all-heads), in the pool's task order.
                var pool = Pools.PoolManifest.Read(zooPath);
                var inputs = modelPath is null || parse.GetValue(allHeads) ? [] : ExpertInputsOf(modelPath);
                var chosen = pool.TasksWithExperts(zooPath, inputs) is { Count: > 0 } merged ? merged : pool.Tasks;
                headSpecs = chosen.Select(t => $"{t.Name}={Path.Combine(zooPath, t.Head)}").ToArray();
                zooPath = null;
            }

            foreach (var (name, given) in new (string, bool)[] { ("--zoo", zooPath is not null), ("--task", taskNames.Length > 0), ("--fp16-task-vectors", parse.GetValue(fp16TaskVectors)) })
            {
                if (given)
                {
                    throw new ArgumentException(name == "--zoo"
                        ? "--zoo gives the heads when no --head is given, or the zoo of --wemoe-routers; with --head, leave it out."
                        : $"{name} applies only to a WEMoE model (--wemoe-routers, or --model with an adaptation directory holding routers).");
                }
            }

            var result = VitOnnxExport.Save(
                modelPath ?? throw new ArgumentException("--model is required."),
                headSpecs.Select(HeadCheckpoint.Parse).ToList(),
                parse.GetValue(output) ?? throw new ArgumentException("--out is required."),
                options);
            parse.InvocationConfiguration.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"exported {result.Tasks.Count} task(s) ({string.Join(", ", result.Tasks)}), {result.Nodes} nodes, {result.Bytes:N0} bytes → {result.OutputPath}"));
            return 0;
        });
        return command;
    }

    /// <summary>
    /// A LoRA / L-LoRA adapter folder: the pool's base with the adapter's ΔW added, exported as a dense model with the head of
    /// the pool task whose expert the adapter is (every head with --all-heads, or the tasks given with --task).
    /// </summary>
    private static int ExportAdapter(ParseResult parse, string adapterPath, string? zoo, string[] heads, string[] tasks, string? output,
        VitOnnxExportOptions options, bool allHeads)
    {
        if (heads.Length > 0)
        {
            throw new ArgumentException("An adapter is exported with the heads of --zoo, the pool whose base it adapts; leave out --head.");
        }

        var manifest = Pools.PoolManifest.Read(zoo ?? throw new ArgumentException($"{adapterPath} is a LoRA adapter: give --zoo, the pool whose base it adapts."));
        // A merged adapter (`merge --param adapter-space=factors`) records what it merged, as a dense merge does: its
        // experts (found by path, or by content when the files moved) give the heads, and its base must be the pool's.
        IReadOnlyDictionary<string, string> metadata;
        using (var weights = Checkpoints.Checkpoint.Open(Path.Combine(adapterPath, LowRank.PeftAdapterFolder.WeightsFileName))) metadata = weights.Metadata;
        var recorded = Merging.StreamingMergeDriver.RecordedInputs(metadata);
        var merged = Merging.StreamingMergeDriver.ExpertInputPaths(metadata);
        var chosen = tasks.Length > 0 ? tasks
            : allHeads ? [.. manifest.Tasks.Select(t => t.Name)]
            : manifest.TasksWithExperts(zoo, [adapterPath]) is { Count: > 0 } own ? [.. own.Select(t => t.Name)]
            : merged.Count > 0 && manifest.TasksWithExperts(zoo, merged) is { Count: > 0 } sources ? [.. sources.Select(t => t.Name)]
            : merged.Count > 0 && TasksWithMergedContent(zoo, manifest, recorded) is { Length: > 0 } same ? same
            : merged.Count == 0 && metadata.ContainsKey(Merging.StreamingMergeDriver.MethodMetadataKey) ? [.. manifest.Tasks.Select(t => t.Name)]
            : throw new ArgumentException($"{adapterPath} is not the expert of any task of {zoo}" +
                (merged.Count > 0 ? " and merged none of its experts" : "") + ": name the heads with --task, or --all-heads.");
        if (manifest.Pretrained is { } poolBase) Merging.MergedAdapterBase.Ensure(adapterPath, Path.Combine(zoo, poolBase), $"the base of {zoo}");
        using var pool = Pools.ExpertPool.Load(zoo, chosen);
        using var adapter = LowRank.PeftAdapterFolder.Load(adapterPath, pool.Config);
        var dense = adapter.Densify(pool.Pretrained);
        try
        {
            var exporter = new DenseVitOnnxExporter(pool.Config, dense, [.. chosen.Select(t => new OnnxTaskHead(t, pool.Head(t)))], options);
            long bytes = exporter.Save(output ?? throw new ArgumentException("--out is required."));
            parse.InvocationConfiguration.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"exported the adapter on the base of {zoo} with {chosen.Length} head(s) ({string.Join(", ", chosen)}), {bytes:N0} bytes → {Path.GetFullPath(output)}"));
            return 0;
        }
        finally
        {
            foreach (var t in dense.Values) t.Dispose();
        }
    }

    /// <summary>The pool's adapter tasks whose adapter weights have the content a merge recorded for one of its experts.</summary>
    private static string[] TasksWithMergedContent(string zoo, Pools.PoolManifest manifest, IReadOnlyList<IReadOnlyDictionary<string, string>> recorded)
    {
        var hashes = recorded.Where(i => i.GetValueOrDefault("role", "").StartsWith("expert", StringComparison.Ordinal))
            .Select(i => i.GetValueOrDefault("content_sha256")).OfType<string>().ToHashSet(StringComparer.Ordinal);
        return [.. manifest.Tasks.Where(t => LowRank.PeftAdapterFolder.IsAdapter(Path.Combine(zoo, t.Expert))
                && hashes.Contains(Checkpoints.CheckpointFingerprint.Of(Path.Combine(zoo, t.Expert, LowRank.PeftAdapterFolder.WeightsFileName)).ContentSha256))
            .Select(t => t.Name)];
    }

    /// <summary>A TACT result: one model per task (its correction), written as <c>&lt;out stem&gt;.&lt;task&gt;.onnx</c>.</summary>
    private static int ExportCorrected(ParseResult parse, string directory, string? zoo, string[] heads, string[] tasks, string? output,
        VitOnnxExportOptions options)
    {
        if (heads.Length > 0)
        {
            throw new ArgumentException("A TACT result takes its heads from --zoo (each task's model has its own); leave out --head.");
        }

        using var pool = Pools.ExpertPool.Load(zoo ?? throw new ArgumentException($"{directory} holds TACT corrections: give --zoo, the pool they were made from."),
            tasks.Length > 0 ? tasks : AdaptedModel.DefaultTasks(directory));
        using var model = AdaptedModel.Load(directory, pool);
        string path = output ?? throw new ArgumentException("--out is required.");
        foreach (var part in model.Parts)
        {
            var exporter = ((CorrectedVitOnnxExporter)part.Exporter).WithOptions(options);
            string file = model.OnnxPathFor(path, part);
            long bytes = exporter.Save(file);
            parse.InvocationConfiguration.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"exported {string.Join(", ", part.Tasks)} (TACT-corrected), {bytes:N0} bytes → {Path.GetFullPath(file)}"));
        }

        return 0;
    }

    private static int ExportWeightEnsembling(ParseResult parse, string routers, string? zoo, string? model, string[] heads, string[] tasks,
        string? output, VitOnnxExportOptions options, bool fp16TaskVectors)
    {
        if (model is not null || heads.Length > 0)
        {
            throw new ArgumentException("--wemoe-routers rebuilds the model and its heads from --zoo; leave out --model and --head.");
        }

        var file = WeightEnsemblingRouterFile.Open(routers);
        var result = WeightEnsemblingOnnxExport.Save(
            file.Path,
            zoo ?? throw new ArgumentException("--wemoe-routers needs --zoo (the zoo the routers were trained on)."),
            output ?? throw new ArgumentException("--out is required."),
            options,
            fp16TaskVectors ? OnnxWeightPrecision.Float16 : null,
            tasks.Length > 0 ? tasks : null);
        WeightEnsemblingOptions o = file.Options;
        string pruned = o.TaskVectorKeep is double keep ? string.Create(CultureInfo.InvariantCulture, $", task vectors pruned to {keep * 100:G4}%") : "";
        string routerKind = string.Create(CultureInfo.InvariantCulture,
            $"depth-{o.RouterDepth} {(o.ShareRouter ? "shared router" : "router per block")}{pruned}{(o.BatchReduce ? ", batch-reduced routing" : "")}{(o.SoftmaxRouting ? ", softmax routing" : "")}");
        parse.InvocationConfiguration.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"exported WEMoE ({file.ExpertCount} experts, {routerKind}) with {result.Tasks.Count} task(s) ({string.Join(", ", result.Tasks)}), {result.Nodes} nodes, {result.Bytes:N0} bytes → {result.OutputPath}"));
        return 0;
    }

    private static IReadOnlyList<string> ExpertInputsOf(string checkpoint)
    {
        using var opened = Checkpoints.Checkpoint.Open(checkpoint);
        return Merging.StreamingMergeDriver.ExpertInputPaths(opened.Metadata);
    }
}
