using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge finetune</c>: makes an expert for a user's task: a linear probe on all training images (a user wants the best
/// head, not the zoo's deliberately weak few-shot one), then fine-tuning with the head frozen.
/// </summary>
internal static class FinetuneCommand
{
    public static Command Create()
    {
        var baseModel = new Option<string>("--base") { Description = "Pre-trained backbone checkpoint.", Required = true };
        var task = new Option<string>("--task") { Description = "A benchmark task name, or an image folder with one sub-folder per class.", Required = true };
        var output = new Option<string>("--out") { Description = "Output directory: expert.safetensors and head.safetensors.", Required = true };
        var epochs = new Option<int?>("--epochs") { Description = "Fine-tuning epochs (default: the zoo recipe's)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the splits and of training.", DefaultValueFactory = _ => 0 };
        var command = new Command("finetune", "Fine-tune an expert for one task from a pre-trained backbone.") { baseModel, task, output, epochs, seed };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            var recipe = new ZooRecipe();
            using var backbone = ModelCheckpoints.LoadBackbone(parse.GetValue(baseModel)!);
            var splits = UserTask.Load(parse.GetValue(task)!, backbone.Config.ImageSize, backbone.Config.Channels, parse.GetValue(seed));
            var fineTuning = parse.GetValue(epochs) is int e ? recipe.FineTuning with { Epochs = e } : recipe.FineTuning;
            using var result = ConsoleProgress.Run<TrainingProgress, ExpertTrainingResult>(writer, "fine-tuning",
                p => ($"epoch {p.Epoch + 1}", p.Step, p.TotalSteps),
                progress => ExpertTrainer.Train(backbone.Config, backbone.Weights, splits, probeShots: 0, recipe.LinearProbe, fineTuning, parse.GetValue(seed), progress, cancellation));
            string directory = parse.GetValue(output)!;
            Directory.CreateDirectory(directory);
            ModelCheckpoints.SaveHead(Path.Combine(directory, "head.safetensors"), result.Head);
            ModelCheckpoints.SaveBackbone(Path.Combine(directory, "expert.safetensors"), backbone.Config, result.Backbone);
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{splits.Train.Name}: {splits.Train.Count} train / {splits.Validation.Count} validation / {splits.Test.Count} test images, {splits.ClassNames.Count} classes"));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"test accuracy: linear probe on the pre-trained model {100 * result.LinearProbe.Test:F1}%, expert {100 * result.Expert.Test:F1}%"));
            writer.WriteLine($"wrote {Path.Combine(directory, "expert.safetensors")} and {Path.Combine(directory, "head.safetensors")}");
            return Task.FromResult(0);
        });
        return command;
    }
}
