using Microsoft.ML.ModelMerging.Pools;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>Which stage of the zoo build is running, for progress displays.</summary>
public sealed record ZooBuildProgress(string Stage, int StageIndex, int StageCount, TrainingProgress? Training);

/// <summary>
/// Builds the zoo: pre-trains the backbone on the recipe's corpus, then makes one expert per benchmark task. Every artifact is
/// written atomically and stamped with the recipe hash and its accuracies, so an interrupted build resumes where it stopped
/// and the manifest is assembled from the artifacts at the end.
/// </summary>
public sealed class ZooBuilder
{
    private const string RecipeKey = "mlmerge.zoo_recipe";
    private const string AccuracyKey = "mlmerge.zoo_accuracy";

    /// <summary>A builder for <paramref name="recipe"/>, reading the package data from <paramref name="sources"/> (the default locations when null).</summary>
    public ZooBuilder(ZooRecipe recipe, BenchmarkSources? sources = null)
    {
        Recipe = recipe;
        Sources = sources ?? BenchmarkSources.Default;
    }

    /// <summary>The recipe being built.</summary>
    public ZooRecipe Recipe { get; }
    /// <summary>Where the benchmark's package data is read from.</summary>
    public BenchmarkSources Sources { get; }

    /// <summary>Builds (or resumes) the zoo in <paramref name="directory"/>: the pre-trained backbone, then one expert and head per task, then <c>pool.json</c>.</summary>
    /// <param name="directory">The zoo directory; finished stages found there with the same recipe hash are reused.</param>
    /// <param name="tasks">The tasks to make experts for; the recipe's when null.</param>
    /// <param name="progress">Receives a report per stage and training step; optional.</param>
    /// <param name="cancellation">Stops the build between steps; finished stages stay.</param>
    /// <returns>The manifest written.</returns>
    public PoolManifest Build(string directory, IReadOnlyList<BenchmarkTask>? tasks = null, IProgress<ZooBuildProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        tasks ??= Recipe.Tasks;
        Directory.CreateDirectory(Path.Combine(directory, "experts"));
        Directory.CreateDirectory(Path.Combine(directory, "heads"));
        var config = Recipe.Model;
        int stages = Recipe.Foundations + tasks.Count;
        manual_seed(Recipe.Seed);

        // A local zoo has one pre-trained base; a non-local one has several foundations and a base that is their mean.
        var foundationPaths = Enumerable.Range(0, Recipe.Foundations)
            .Select(f => Recipe.Foundations == 1 ? PoolManifest.PretrainedFileName : ZooRecipe.FoundationPath(f)).ToList();
        if (Recipe.Foundations > 1) Directory.CreateDirectory(Path.Combine(directory, "foundations"));
        PoolPretraining? pretraining = null;
        for (int f = 0; f < Recipe.Foundations; f++)
        {
            string stage = Recipe.Foundations == 1 ? $"pre-training on the {Recipe.Corpus} corpus" : $"pre-training foundation {f} on the {Recipe.Corpus} corpus";
            var made = Pretrain(Path.Combine(directory, foundationPaths[f]), config, f,
                p => progress?.Report(new ZooBuildProgress(stage, f, stages, p)), cancellation);
            pretraining ??= made;
        }

        if (Recipe.Foundations > 1) WriteMeanOfFoundations(directory, foundationPaths);

        var foundations = foundationPaths.Select(p => ModelCheckpoints.LoadBackbone(Path.Combine(directory, p))).ToList();
        var zooTasks = new List<PoolTask>();
        try
        {
            for (int i = 0; i < tasks.Count; i++)
            {
                var task = tasks[i];
                int foundation = Recipe.FoundationOf(i);
                int stage = Recipe.Foundations + i;
                progress?.Report(new ZooBuildProgress($"expert {task.Name}", stage, stages, null));
                var made = MakeExpert(directory, task, foundations[foundation].Weights, Recipe.Seed + 1 + i,
                    p => progress?.Report(new ZooBuildProgress($"expert {task.Name}", stage, stages, p)), cancellation);
                zooTasks.Add(Recipe.Foundations == 1 ? made : made with { Foundation = foundationPaths[foundation] });
            }
        }
        finally
        {
            foreach (var loaded in foundations) loaded.Dispose();
        }

        var manifest = new PoolManifest
        {
            RecipeHash = Recipe.Hash,
            Recipe = JsonDocument.Parse(Recipe.ToJson()).RootElement,
            Model = JsonDocument.Parse(config.ToJson()).RootElement,
            Pretrained = PoolManifest.PretrainedFileName,
            Pretraining = pretraining,
            Tasks = zooTasks,
        };
        manifest.Write(directory);
        return manifest;
    }

    /// <summary>
    /// The base of a non-local pool: the element-wise mean of its foundations, the midpoint tact-merge merges around
    /// (task vectors are taken from it). Recomputed on every build: it is cheap and fully determined by the foundations.
    /// </summary>
    private void WriteMeanOfFoundations(string directory, IReadOnlyList<string> foundationPaths)
    {
        using var scope = NewDisposeScope();
        var loaded = foundationPaths.Select(p => ModelCheckpoints.LoadBackbone(Path.Combine(directory, p))).ToList();
        try
        {
            var mean = loaded[0].Weights.Keys.ToDictionary(name => name,
                name => stack(loaded.Select(l => l.Weights[name]).ToArray()).mean([0L]), StringComparer.Ordinal);
            ModelCheckpoints.SaveBackbone(Path.Combine(directory, PoolManifest.PretrainedFileName), Recipe.Model, mean,
                new Dictionary<string, string> { ["mlmerge.mean_of"] = string.Join(",", foundationPaths) });
        }
        finally
        {
            foreach (var l in loaded) l.Dispose();
        }
    }

    private PoolPretraining Pretrain(string path, VisionTransformerConfig config, int foundation, Action<TrainingProgress> report,
        CancellationToken cancellation)
    {
        string hash = Recipe.FoundationPretrainingHash(foundation);
        int seed = Recipe.FoundationSeed(foundation);
        if (TryReadStamp(path, hash, out var stamp)) return JsonSerializer.Deserialize<PoolPretraining>(stamp)!;
        var corpus = Recipe.Corpus switch
        {
            ZooRecipe.GlyphCorpus => PretrainingCorpus.Load(Sources, trainPerClass: Recipe.PretrainingImagesPerClass, seed: Recipe.Seed),
            ZooRecipe.BroadCorpus => BroadPretrainingCorpus.Load(Sources, trainPerClass: Recipe.PretrainingImagesPerClass, seed: Recipe.Seed),
            ZooRecipe.SettingsCorpus => BroadPretrainingCorpus.Load(Sources, trainPerClass: Recipe.PretrainingImagesPerClass, seed: Recipe.Seed, settings: true),
            _ => throw new ArgumentException($"Unknown pre-training corpus '{Recipe.Corpus}': {string.Join(", ", ZooRecipe.Corpora)}."),
        };

        // Foundations differ in their initialisation and data order only: the corpus is the same images.
        using var model = VisionTransformer.Create(config, seed);
        using var head = ClassificationHead.CreateLinear(corpus.ClassNames, config.FeatureDim, seed);
        using (var images = corpus.Train.ToTensor())
        using (var labels = corpus.Train.LabelsToTensor())
        {
            ClassifierTrainer.Train(x => head.Forward(model.Forward(x)), model.Parameters.Concat(head.Parameters).ToList(), images, labels,
                Recipe.Pretraining with { Seed = seed }, new SynchronousProgress<TrainingProgress>(report), cancellation);
        }
        double accuracy = ExpertTrainer.Accuracy(config, model.Weights, head, corpus.Validation);
        var result = new PoolPretraining
        {
            Corpus = Recipe.Corpus, Classes = corpus.ClassNames.Count, Train = corpus.Train.Count,
            Fingerprint = corpus.Train.Fingerprint, ValidationAccuracy = Math.Round(accuracy, 4),
        };
        // The corpus head is not part of the zoo: the pre-trained model is a generic backbone, like CLIP's image tower.
        ModelCheckpoints.SaveBackbone(path, model, Stamp(hash, JsonSerializer.Serialize(result)));
        return result;
    }

    private PoolTask MakeExpert(string directory, BenchmarkTask task, IReadOnlyDictionary<string, Tensor> pretrained, int seed,
        Action<TrainingProgress> report, CancellationToken cancellation)
    {
        var splits = task.Load(Sources, Recipe.Seed);
        string expertPath = Path.Combine("experts", task.Name + ".safetensors");
        string headPath = Path.Combine("heads", task.Name + ".safetensors");
        SplitAccuracy probe, individual;
        if (TryReadStamp(Path.Combine(directory, expertPath), Recipe.Hash, out var stamp) && File.Exists(Path.Combine(directory, headPath)))
        {
            var saved = JsonSerializer.Deserialize<Dictionary<string, SplitAccuracy>>(stamp)!;
            (probe, individual) = (saved["pretrained_linear_probe"], saved["individual"]);
        }
        else
        {
            using var result = ExpertTrainer.Train(Recipe.Model, pretrained, splits, Recipe.LinearProbeShots, Recipe.LinearProbe, Recipe.FineTuning, seed,
                new SynchronousProgress<TrainingProgress>(report), cancellation, headKind: Recipe.Head);
            (probe, individual) = (result.LinearProbe.Rounded(), result.Expert.Rounded());
            var accuracy = JsonSerializer.Serialize(new Dictionary<string, SplitAccuracy> { ["pretrained_linear_probe"] = probe, ["individual"] = individual });
            ModelCheckpoints.SaveHead(Path.Combine(directory, headPath), result.Head, task: task.Name);
            // The expert is written last: its stamp is what marks the task as done.
            ModelCheckpoints.SaveBackbone(Path.Combine(directory, expertPath), Recipe.Model, result.Backbone,
                new Dictionary<string, string>(Stamp(Recipe.Hash, accuracy)) { ["mlmerge.task"] = task.Name });
        }
        return new PoolTask
        {
            Name = task.Name, Source = task.Source, ClassNames = task.ClassNames,
            Train = splits.Train.Count, Validation = splits.Validation.Count, Test = splits.Test.Count,
            Fingerprints = PoolTask.FingerprintsOf(splits),
            Expert = expertPath.Replace('\\', '/'), Head = headPath.Replace('\\', '/'),
            PretrainedLinearProbe = probe, Individual = individual,
        };
    }

    private static Dictionary<string, string> Stamp(string hash, string accuracyJson) => new()
    {
        [RecipeKey] = hash,
        [AccuracyKey] = accuracyJson,
    };

    /// <summary>An artifact counts as done when it exists and was made by the recipe with this hash.</summary>
    private static bool TryReadStamp(string path, string expectedHash, out string accuracyJson)
    {
        accuracyJson = "";
        if (!File.Exists(path)) return false;
        using var checkpoint = Checkpoint.Open(path);
        if (!checkpoint.Metadata.TryGetValue(RecipeKey, out var hash) || hash != expectedHash) return false;
        return checkpoint.Metadata.TryGetValue(AccuracyKey, out accuracyJson!);
    }


}
