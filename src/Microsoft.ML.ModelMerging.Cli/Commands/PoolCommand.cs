using System.CommandLine;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge pool create (--base &lt;checkpoint&gt; | --no-base-like &lt;checkpoint&gt;) --out &lt;pool&gt;</c> and <c>mlmerge pool add --zoo &lt;pool&gt; --task &lt;name&gt;
/// --images &lt;folder&gt; --expert &lt;checkpoint&gt; (--head &lt;file&gt; | --probe | --class-embeddings &lt;file&gt;) [--foundation &lt;checkpoint&gt;]</c>: a pool of experts
/// fine-tuned elsewhere (Hugging Face CLIP checkpoints included), which every pool verb then reads.
/// </summary>
internal static class PoolCommand
{
    public static Command Create() => new("pool", "Make a pool of your own experts (e.g. Hugging Face CLIP checkpoints) with each task's image folder.")
    {
        CreateVerb(),
        AddVerb(),
    };

    private static Command CreateVerb()
    {
        var baseModel = new Option<string?>("--base") { Description = "The pre-trained model the experts were fine-tuned from: a Hugging Face model directory (model.safetensors or a sharded index, config.json, preprocessor_config.json) or a checkpoint." };
        var noBase = new Option<string?>("--no-base-like")
        {
            Description = "No shared base (experts of different pre-trained models or initialisations; each `pool add` names its --foundation): " +
                "the architecture and preprocessing are read from this checkpoint, e.g. one of the experts.",
        };
        var output = new Option<string>("--out") { Description = "The pool directory to create.", Required = true };
        var copy = new Option<bool>("--copy") { Description = "Copy the base into the pool (pretrained.safetensors) instead of referring to it." };
        var command = new Command("create", "Create an empty pool around a pre-trained model; images will be preprocessed as its preprocessor_config.json says.")
        {
            baseModel, noBase, output, copy,
        };
        command.SetAction(parse =>
        {
            string pool = parse.GetValue(output)!;
            string? shared = parse.GetValue(baseModel), like = parse.GetValue(noBase);
            if ((shared is null) == (like is null))
                throw new ArgumentException("Give exactly one of --base <pre-trained model> and --no-base-like <checkpoint> (a pool of experts without a shared base).");
            if (like is not null && parse.GetValue(copy))
                throw new ArgumentException("--copy copies the base; a pool made with --no-base-like has none.");
            var manifest = shared is not null ? PoolImport.Create(pool, shared, parse.GetValue(copy)) : PoolImport.CreateWithoutBase(pool, like!);
            var config = manifest.ModelConfig;
            string images = manifest.Preprocessing is { } p
                ? $"images: shortest side to {p.ShortestEdge} ({p.Resample}), centre crop {p.CropSize}×{p.CropSize}, RGB"
                : $"images: read at {config.ImageSize}×{config.ImageSize}, {config.Channels} channel(s)";
            string origin = manifest.Pretrained is { } pretrained ? $"base {pretrained}" : "no shared base (name each task's --foundation in `pool add`)";
            parse.InvocationConfiguration.Output.WriteLine($"created the pool {Path.GetFullPath(pool)}: {origin}; {images}");
            // A Hugging Face model without its processor file: what was assumed is said, since a model trained otherwise scores worse without an error.
            string model = (shared ?? like)!;
            string folder = Directory.Exists(model) ? model : Path.GetDirectoryName(Path.GetFullPath(model))!;
            if (File.Exists(Path.Combine(folder, "config.json")) && !File.Exists(Path.Combine(folder, Data.ImagePreprocessing.HuggingFaceFileName)))
                parse.InvocationConfiguration.Output.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"note: no {Data.ImagePreprocessing.HuggingFaceFileName} beside {model}: CLIP's processor is assumed (square resize and crop to {config.ImageSize}, mean [{string.Join(", ", config.Mean)}], std [{string.Join(", ", config.Std)}])."));
            return 0;
        });
        return command;
    }

    private static Command AddVerb()
    {
        var zoo = new Option<string>("--zoo") { Description = "The pool directory.", Required = true };
        var task = new Option<string>("--task") { Description = "The task's name in the pool.", Required = true };
        var images = new Option<string>("--images") { Description = "The task's images: one sub-folder per class, PNG or JPEG of any size.", Required = true };
        var expert = new Option<string>("--expert") { Description = "The fine-tuned checkpoint (file, sharded index or Hugging Face model directory).", Required = true };
        var head = new Option<string?>("--head") { Description = "Your classification head (.safetensors with head.weight [classes, features], head.bias)." };
        var probe = new Option<bool>("--probe") { Description = "No head: fit a linear probe on the pre-trained model's features of the training split." };
        var embeddings = new Option<string?>("--class-embeddings")
        {
            Description = $"A CLIP zero-shot head: .safetensors with '{PoolImport.ClassEmbeddingsName}' [classes, projection_dim] (rows in class sub-folder order) and optional scalar '{PoolImport.LogitScaleName}'.",
        };
        var copy = new Option<bool>("--copy") { Description = "Copy the expert into the pool (experts/<task>.safetensors) instead of referring to it." };
        var seed = new Option<int>("--seed") { Description = "Seed of the split (15% validation, 15% test per class) and of the linear probe.", DefaultValueFactory = _ => 0 };
        var foundation = new Option<string?>("--foundation")
        {
            Description = "The model this expert was fine-tuned from, when it is not the pool's base (experts of different pre-trained models or initialisations; " +
                "required in a pool without a base). `mlmerge align` matches the foundations to each other.",
        };
        var replace = new Option<bool>("--replace") { Description = "Register a task the pool already has again (after its images or expert changed): its entry and head are replaced." };
        var command = new Command("add", "Register your expert for one task: splits the images (seeded, recorded), measures the expert with its head, writes pool.json.")
        {
            zoo, task, images, expert, head, probe, embeddings, copy, seed, foundation, replace,
        };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            var phases = new SynchronousProgress<string>(phase => writer.WriteLine($"[{DateTime.Now:HH:mm:ss}] {phase}"));
            var added = PoolImport.AddExpert(parse.GetValue(zoo)!, new PoolExpertOptions
            {
                Task = parse.GetValue(task)!,
                Images = parse.GetValue(images)!,
                Expert = parse.GetValue(expert)!,
                Head = parse.GetValue(head),
                Probe = parse.GetValue(probe),
                ClassEmbeddings = parse.GetValue(embeddings),
                Copy = parse.GetValue(copy),
                Seed = parse.GetValue(seed),
                Foundation = parse.GetValue(foundation),
                Replace = parse.GetValue(replace),
            }, phases, cancellation);
            writer.WriteLine(PoolImport.Describe(added));
            writer.WriteLine($"added to the pool {Path.GetFullPath(parse.GetValue(zoo)!)}: expert {added.Expert}, head {added.Head}");
            return Task.FromResult(0);
        });
        return command;
    }
}
