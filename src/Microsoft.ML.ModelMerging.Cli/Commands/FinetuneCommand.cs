using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge finetune</c>: makes an expert for a user's task with the zoo's recipe: a linear probe on all training images
/// (a user wants the best head, not the zoo's deliberately weak few-shot one), then fine-tuning with the head frozen.
/// With <c>--add-to</c> the task joins a pool that every other verb reads.
/// </summary>
internal static class FinetuneCommand
{
    public static Command Create()
    {
        var recipe = new ZooRecipe();
        var baseModel = new Option<string?>("--base") { Description = "Pre-trained backbone checkpoint (required unless --add-to names an existing pool, whose base is used)." };
        var task = new Option<string>("--task") { Description = "An image folder with one sub-folder per class, or a benchmark task name.", Required = true };
        var addTo = new Option<string?>("--add-to") { Description = "Pool directory to register the task in (created from --base when missing): pool.json, experts/, heads/." };
        var name = new Option<string?>("--name") { Description = "The task's name in the pool (default: the folder's name)." };
        var output = new Option<string?>("--out") { Description = "Without a pool: output directory for expert.safetensors and head.safetensors." };
        var epochs = new Option<int?>("--epochs") { Description = $"Fine-tuning epochs (default: the zoo recipe's {recipe.FineTuning.Epochs})." };
        var seed = new Option<int>("--seed") { Description = "Seed of the splits and of training.", DefaultValueFactory = _ => 0 };
        var replace = new Option<bool>("--replace") { Description = "With --add-to: replace a task of the same name already in the pool." };
        var mode = new Option<string>("--mode")
        {
            Description = "full: every backbone weight; lora: a LoRA adapter per target layer (PEFT: ΔW = alpha/r·B·A, A Kaiming-uniform, B zero), backbone frozen; " +
                "l-lora: each LoRA module linearised around its initialisation (all tasks share it through --lora-seed). Adapters are stored as PEFT folders.",
            DefaultValueFactory = _ => FineTuningModes.Full,
        };
        mode.AcceptOnlyFromAmong([.. FineTuningModes.All]);
        var rank = new Option<int>("--rank") { Description = "LoRA rank r.", DefaultValueFactory = _ => new LoraOptions().Rank };
        var alpha = new Option<double>("--alpha") { Description = "LoRA alpha (scale alpha/r).", DefaultValueFactory = _ => new LoraOptions().Alpha };
        var targets = new Option<string>("--targets")
        {
            Description = $"LoRA target layers by short name, comma-separated ({string.Join(", ", LoraOptions.KnownTargets)}).",
            DefaultValueFactory = _ => string.Join(",", new LoraOptions().Targets),
        };
        var loraSeed = new Option<int>("--lora-seed") { Description = "Seed of the adapters' initialisation A0 (shared by every task of a pool).", DefaultValueFactory = _ => 0 };
        var learningRate = new Option<double?>("--lr") { Description = $"Fine-tuning learning rate (default: the zoo recipe's {Format(recipe.FineTuning.LearningRate)}; LoRA usually wants more: the default zoo's adapters were trained at 3e-3, L-LoRA's at 1e-2)." };
        var headOption = new Option<string?>("--head") { Description = "With --add-to: an existing head checkpoint of the task, used frozen instead of fitting a linear probe (the pool refers to it)." };
        var command = new Command("finetune",
            "Fine-tune an expert for one task from a pre-trained backbone, with the zoo's recipe: a linear-probe head " +
            $"({recipe.LinearProbe.Epochs} epochs, lr {Format(recipe.LinearProbe.LearningRate)}) on all training images of the frozen backbone, then " +
            $"{recipe.FineTuning.Epochs} epochs of full fine-tuning (AdamW, lr {Format(recipe.FineTuning.LearningRate)} for the MLPs and " +
            $"{Format(recipe.FineTuning.LearningRate * (recipe.FineTuning.NonMlpLearningRateScale ?? 1))} for every other tensor, weight decay {Format(recipe.FineTuning.WeightDecay)}, " +
            $"cosine schedule) with the head frozen. Image folders are split per class, seeded: {Format(ImageFolderTask.ValidationFraction)} validation, " +
            $"{Format(ImageFolderTask.TestFraction)} test, the rest train.")
        {
            baseModel, task, addTo, name, output, epochs, seed, replace, mode, rank, alpha, targets, loraSeed, learningRate, headOption,
        };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            string? pool = parse.GetValue(addTo), directory = parse.GetValue(output);
            if ((pool is null) == (directory is null))
            {
                throw new ArgumentException("Give exactly one of --add-to <pool directory> and --out <directory>.");
            }

            var fineTuning = parse.GetValue(epochs) is int e ? recipe.FineTuning with { Epochs = e } : recipe.FineTuning;
            if (parse.GetValue(learningRate) is double lr) fineTuning = fineTuning with { LearningRate = lr };
            string chosenMode = FineTuningModes.Parse(parse.GetValue(mode)!);
            // Adapter options with a full fine-tuning would be silently ignored.
            if (chosenMode == FineTuningModes.Full && new Option[] { rank, alpha, targets, loraSeed }.FirstOrDefault(o => parse.GetResult(o) is { Implicit: false }) is { } unused)
                throw new ArgumentException($"{unused.Name} sets up a LoRA adapter; it does not apply to --mode full (use --mode lora or l-lora).");
            // An adapter trains only its own matrices: the MLP / non-MLP split of full fine-tuning does not apply (nor is recorded).
            if (chosenMode != FineTuningModes.Full) fineTuning = fineTuning with { NonMlpLearningRateScale = null };
            var lora = new LoraOptions
            {
                Rank = parse.GetValue(rank), Alpha = parse.GetValue(alpha), Targets = LoraOptions.ParseTargets(parse.GetValue(targets)!),
                Seed = parse.GetValue(loraSeed), Linearized = chosenMode == FineTuningModes.LinearizedLora,
            };
            if (chosenMode != FineTuningModes.Full) lora.Validate();
            if (parse.GetValue(headOption) is not null && pool is null) throw new ArgumentException("--head goes with --add-to.");
            var phases = new SynchronousProgress<string>(phase => writer.WriteLine($"[{DateTime.Now:HH:mm:ss}] {phase}"));
            if (pool is not null)
            {
                var options = new PoolFineTuningOptions
                {
                    Task = parse.GetValue(task)!, Name = parse.GetValue(name), Base = parse.GetValue(baseModel), Seed = parse.GetValue(seed), FineTuning = fineTuning,
                    Replace = parse.GetValue(replace), Mode = chosenMode, Lora = lora, Head = parse.GetValue(headOption),
                };
                var added = ConsoleProgress.Run<TrainingProgress, PoolFineTuningResult>(writer, "fine-tuning",
                    p => ($"epoch {p.Epoch + 1}", p.Step, p.TotalSteps),
                    progress => PoolFineTuning.AddTask(pool, options, phases, progress, cancellation));
                var t = added.Task;
                writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{t.Name}: {t.Train} train / {t.Validation} validation / {t.Test} test images, {t.ClassNames.Count} classes"));
                writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"test accuracy: linear probe on the pre-trained model {100 * t.PretrainedLinearProbe.Test:F1}%, expert {100 * t.Individual.Test:F1}% ({added.Seconds:F0} s)"));
                if (chosenMode != FineTuningModes.Full) writer.WriteLine($"mode {chosenMode}: r = {lora.Rank}, alpha = {Format(lora.Alpha)}, targets {string.Join(",", lora.Targets)}, lora seed {lora.Seed}");
                writer.WriteLine($"{(added.CreatedPool ? "created the pool" : "added to the pool")} {Path.GetFullPath(pool)}: {t.Expert}, {t.Head}; measurements in {added.ReportPath}");
                return Task.FromResult(0);
            }

            string basePath = parse.GetValue(baseModel) ?? throw new ArgumentException("--base is required with --out.");
            using var backbone = ModelCheckpoints.LoadBackbone(basePath);
            // A Hugging Face base reads folders as its preprocessor does, as a pool around it would.
            string taskSource = parse.GetValue(task)!;
            var splits = Directory.Exists(taskSource) && PoolImport.PreprocessingOf(basePath, backbone.Config) is { } preprocessing
                ? ImageFolderTask.Load(taskSource, preprocessing, parse.GetValue(seed), ImageFolderTask.ValidationFraction, ImageFolderTask.TestFraction)
                : ImageFolderTask.Load(taskSource, backbone.Config.ImageSize, backbone.Config.Channels, parse.GetValue(seed));
            using var result = ConsoleProgress.Run<TrainingProgress, ExpertTrainingResult>(writer, "fine-tuning",
                p => ($"epoch {p.Epoch + 1}", p.Step, p.TotalSteps),
                progress => ExpertTrainer.Train(backbone.Config, backbone.Weights, splits, probeShots: 0, recipe.LinearProbe, fineTuning, parse.GetValue(seed), progress, cancellation, phases,
                    chosenMode == FineTuningModes.Full ? null : lora));
            Directory.CreateDirectory(directory!);
            ModelCheckpoints.SaveHead(Path.Combine(directory!, "head.safetensors"), result.Head);
            string expertPath = Path.Combine(directory!, result.Adapter is null ? "expert.safetensors" : "adapter");
            if (result.Adapter is { } adapter) PeftAdapterFolder.Save(adapter, expertPath, Path.GetFullPath(basePath));
            else ModelCheckpoints.SaveBackbone(expertPath, backbone.Config, result.Backbone);
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(taskSource))}: {splits.Train.Count} train / {splits.Validation.Count} validation / {splits.Test.Count} test images, {splits.ClassNames.Count} classes"));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"test accuracy: linear probe on the pre-trained model {100 * result.LinearProbe.Test:F1}%, expert {100 * result.Expert.Test:F1}%"));
            writer.WriteLine($"wrote {expertPath} and {Path.Combine(directory!, "head.safetensors")}");
            return Task.FromResult(0);
        });
        return command;
    }

    private static string Format(double value) => value.ToString("G", CultureInfo.InvariantCulture);
}
