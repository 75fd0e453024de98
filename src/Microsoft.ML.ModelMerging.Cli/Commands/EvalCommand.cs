using System.CommandLine;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary><c>mlmerge eval</c>: per-task accuracy of a model, each task scored with its own head from the zoo.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "A backbone checkpoint (file or directory), e.g. a merge's output, an `mlmerge adapt` output directory, or a LoRA adapter folder (PEFT layout, applied to the pool's base).", Required = true };
        var zoo = new Option<string?>("--zoo") { Description = "Zoo directory (heads and task data); default: the pool an `mlmerge adapt` directory records, else zoos/default; required for a LoRA adapter, whose base it gives." };
        var tasks = new Option<string[]>("--task") { Description = "Only these tasks (default: all of the zoo's; for a TACT result, the tasks it corrected)." };
        var split = new Option<string>("--split") { Description = "val | test", DefaultValueFactory = _ => "test" };
        var command = new Command("eval", "Per-task accuracy of a model on the zoo's tasks.") { model, zoo, tasks, split };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(model)!;
            // A TACT result has models for the tasks it corrected only: those, unless tasks are named.
            var taskNames = parse.GetValue(tasks) is { Length: > 0 } named ? named
                : AdaptedModel.IsAdaptationDirectory(path) ? AdaptedModel.DefaultTasks(path) : null;
            // An adaptation directory knows the pool it was made from (when it still exists there).
            // An adapter is a change to a base: the pool that has that base is named, not taken by default.
            if (parse.GetValue(zoo) is null && PeftAdapterFolder.IsAdapter(path))
                throw new ArgumentException($"{path} is a LoRA adapter: give --zoo, the pool whose base it adapts.");
            string pool = parse.GetValue(zoo) ?? RecordedPool(path) ?? "zoos/default";
            using var experts = ExpertPool.Load(pool, taskNames);
            var chosen = TaskAccuracy.ParseSplit(parse.GetValue(split)!);
            TaskAccuracies accuracies;
            if (AdaptedModel.IsAdaptationDirectory(path))
            {
                using var adapted = AdaptedModel.Load(path, experts);
                accuracies = TaskAccuracy.Evaluate(experts, (task, x) => adapted.Features(task, x), chosen);
            }
            else if (PeftAdapterFolder.IsAdapter(path))
            {
                // A LoRA adapter: the pool's base with the adapter's ΔW added.
                if (experts.Manifest.Pretrained is { } poolBase) Merging.MergedAdapterBase.Ensure(path, Path.Combine(pool, poolBase), $"the base of {pool}");
                using var adapter = PeftAdapterFolder.Load(path, experts.Config);
                var dense = adapter.Densify(experts.Pretrained);
                try
                {
                    accuracies = TaskAccuracy.Evaluate(experts, experts.Config, dense, chosen);
                }
                finally
                {
                    foreach (var t in dense.Values) t.Dispose();
                }
            }
            else
            {
                using var backbone = ModelCheckpoints.LoadBackbone(path);
                // The pool's heads read features of the pool's architecture; another model's would score as noise.
                if (!backbone.Config.Equals(experts.Config))
                    throw new ArgumentException($"{path} is not a model of the pool's architecture ({string.Join("; ", backbone.Config.DifferencesFrom(experts.Config, "the pool's"))}).");
                accuracies = TaskAccuracy.Evaluate(experts, backbone.Config, backbone.Weights, chosen);
            }

            parse.InvocationConfiguration.Output.Write(ZooReport.Accuracies(experts, accuracies, chosen));
            return 0;
        });
        return command;
    }

    /// <summary>The pool an adaptation directory records (null for anything else); refused by name when it is gone.</summary>
    private static string? RecordedPool(string path)
    {
        if (!AdaptedModel.IsAdaptationDirectory(path)) return null;
        string recorded = AdaptationManifest.Read(path).Zoo;
        return PoolManifest.Exists(recorded) ? recorded
            : throw new ArgumentException($"{path} was made from the pool at {recorded}, which is not there any more: give --zoo <pool>.");
    }
}
