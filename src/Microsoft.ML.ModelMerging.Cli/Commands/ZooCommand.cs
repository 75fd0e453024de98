using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary><c>mlmerge zoo build</c>: rebuilds the model zoo (pre-trained backbone + one expert per task), resumably.</summary>
internal static class ZooCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Zoo directory.", DefaultValueFactory = _ => "zoos/default" };
        var tasks = new Option<string[]>("--task") { Description = "Only these benchmark tasks (default: the recipe's benchmark)." };
        var recipe = new Option<string>("--recipe")
        {
            Description = "default (8 RGB tasks, broad corpus, local fine-tuning), far (the first zoo: 7 gray tasks, far fine-tuning), nonlocal (the default tasks, experts fine-tuned from two differently seeded backbones) or smoke (default shrunk to minutes).",
            DefaultValueFactory = _ => "default",
        };
        var build = new Command("build", "Pre-train the backbone on the recipe's corpus and fine-tune one expert per task. Resumes an interrupted build.")
        {
            output, tasks, recipe,
        };
        build.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            var chosen = parse.GetValue(tasks) is { Length: > 0 } names ? names.Select(BenchmarkTasks.Get).ToList() : null;
            var clock = Stopwatch.StartNew();
            var manifest = ConsoleProgress.Run<ZooBuildProgress, PoolManifest>(writer, "zoo",
                p => ($"[{p.StageIndex + 1}/{p.StageCount}] {p.Stage}", p.Training?.Step ?? 0, p.Training?.TotalSteps ?? 1),
                progress => new ZooBuilder(ZooRecipe.Named(parse.GetValue(recipe)!)).Build(parse.GetValue(output)!, chosen, progress, cancellation));
            writer.WriteLine(ZooReport.Table(manifest));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"zoo built in {clock.Elapsed.TotalMinutes:F1} min → {Path.GetFullPath(parse.GetValue(output)!)}"));
            return Task.FromResult(0);
        });
        return new Command("zoo", "The project's model zoo.") { build };
    }
}
