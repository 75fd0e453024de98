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
        // Variants of the recipe's expert fine-tuning (the pre-trained backbone is reused when only these change).
        var epochs = new Option<int?>("--fine-tune-epochs") { Description = "Fine-tuning epochs instead of the recipe's." };
        var learningRate = new Option<double?>("--fine-tune-lr") { Description = "Fine-tuning learning rate instead of the recipe's." };
        var nonMlpScale = new Option<double?>("--non-mlp-lr-scale")
        {
            Description = "Learning rate of every tensor outside the MLPs as a multiple of the fine-tuning rate (0 = frozen) instead of the recipe's.",
        };
        var head = new Option<string?>("--head")
        {
            Description = "How each expert's frozen head is made from the shots instead of the recipe's: linear-probe or prototype (class prototypes, CLIP-style, calibrated scale).",
        };
        var corpus = new Option<string?>("--corpus")
        {
            Description = $"Pre-training corpus instead of the recipe's: {string.Join(", ", ZooRecipe.Corpora)} ({ZooRecipe.SettingsCorpus}: with photographic settings).",
        };
        var width = new Option<int?>("--width")
        {
            Description = "Backbone width instead of the recipe's (the MLP is 4× as wide, the head count is kept); a new width pre-trains a new backbone.",
        };
        var build = new Command("build", "Pre-train the backbone on the recipe's corpus and fine-tune one expert per task. Resumes an interrupted build.")
        {
            output, tasks, recipe, epochs, learningRate, nonMlpScale, head, corpus, width,
        };
        build.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            var chosen = parse.GetValue(tasks) is { Length: > 0 } names ? names.Select(BenchmarkTasks.Get).ToList() : null;
            var clock = Stopwatch.StartNew();
            var manifest = ConsoleProgress.Run<ZooBuildProgress, PoolManifest>(writer, "zoo",
                p => ($"[{p.StageIndex + 1}/{p.StageCount}] {p.Stage}", p.Training?.Step ?? 0, p.Training?.TotalSteps ?? 1),
                progress => new ZooBuilder(Chosen(parse, recipe, epochs, learningRate, nonMlpScale, head, corpus, width)).Build(parse.GetValue(output)!, chosen, progress, cancellation));
            writer.WriteLine(ZooReport.Table(manifest));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"zoo built in {clock.Elapsed.TotalMinutes:F1} min → {Path.GetFullPath(parse.GetValue(output)!)}"));
            return Task.FromResult(0);
        });
        return new Command("zoo", "The project's model zoo.") { build };
    }

    private static ZooRecipe Chosen(ParseResult parse, Option<string> name, Option<int?> epochs, Option<double?> learningRate, Option<double?> nonMlpScale, Option<string?> head,
        Option<string?> corpus, Option<int?> width)
    {
        var recipe = ZooRecipe.Named(parse.GetValue(name)!);
        var fineTuning = recipe.FineTuning;
        if (parse.GetValue(epochs) is int e) fineTuning = fineTuning with { Epochs = e };
        if (parse.GetValue(learningRate) is double lr) fineTuning = fineTuning with { LearningRate = lr };
        if (parse.GetValue(nonMlpScale) is double scale) fineTuning = fineTuning with { NonMlpLearningRateScale = scale == 1 ? null : scale };
        fineTuning.Validate();
        var headKind = parse.GetValue(head)?.Trim().ToLowerInvariant() switch
        {
            null => recipe.Head,
            "linear-probe" => ExpertHeadKind.LinearProbe,
            "prototype" => ExpertHeadKind.Prototype,
            var other => throw new ArgumentException($"Unknown --head '{other}': linear-probe or prototype."),
        };
        string corpusName = parse.GetValue(corpus)?.Trim().ToLowerInvariant() ?? recipe.Corpus;
        if (!ZooRecipe.Corpora.Contains(corpusName))
            throw new ArgumentException($"Unknown --corpus '{corpusName}': {string.Join(", ", ZooRecipe.Corpora)}.");
        var model = recipe.Model;
        if (parse.GetValue(width) is int w)
        {
            if (w < model.Heads || w % model.Heads != 0)
                throw new ArgumentException($"--width {w} must be a positive multiple of the recipe's {model.Heads} attention heads.");
            model = model with { Width = w, MlpSize = 4 * w };
        }
        return recipe with { FineTuning = fineTuning, Head = headKind, Corpus = corpusName, Model = model };
    }
}
