using Microsoft.ML.ModelMerging.Pools;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>
/// How the zoo is made, in one place. The pre-trained model learns generic glyph features from a vocabulary the benchmark
/// never uses (Greek, Cyrillic, Hebrew, symbols...), so it is a fair starting point for every task, as CLIP is for the
/// standard benchmark. Experts are then made as FusionBench's are: a head on frozen pre-trained features, kept frozen while
/// the whole backbone is fine-tuned on the task — so heads are per task and task vectors live in the backbone.
/// The head is a linear probe fitted on only <see cref="LinearProbeShots"/> images per class. CLIP's zero-shot heads are
/// weak (about half the fine-tuned accuracy on the standard tasks) and fine-tuning moves the features to them; a probe fitted
/// on all training images would instead do most of the work on frozen features, leave little in the task vectors, and make
/// merging look easy (measured: the pre-trained model with full-data probes reached 96% of the experts' accuracy).
/// </summary>
public sealed record ZooRecipe
{
    public VisionTransformerConfig Model { get; init; } = new()
    {
        ImageSize = 28, Channels = 1, PatchSize = 7, Width = 96, Layers = 4, Heads = 4, MlpSize = 384,
        Activation = VisionActivation.QuickGelu,
    };

    public int Seed { get; init; }
    public int PretrainingImagesPerClass { get; init; } = 200;
    public TrainingOptions Pretraining { get; init; } = new() { Epochs = 8, BatchSize = 128, LearningRate = 1e-3, WeightDecay = 0.05, MaxShift = 2 };
    /// <summary>Images per class the linear-probe head is fitted on (seeded, stratified choice from the training split).</summary>
    public int LinearProbeShots { get; init; } = 2;
    /// <summary>Linear probe on cached frozen features of the shots: cheap, so many epochs (one step each).</summary>
    public TrainingOptions LinearProbe { get; init; } = new() { Epochs = 200, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 };
    public TrainingOptions FineTuning { get; init; } = new() { Epochs = 8, BatchSize = 64, LearningRate = 3e-4, WeightDecay = 0.05, MaxShift = 1 };

    public string ToJson() => JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(Model.ToJson()).RootElement,
        seed = Seed,
        pretraining_images_per_class = PretrainingImagesPerClass,
        pretraining = Pretraining,
        linear_probe_shots = LinearProbeShots,
        linear_probe = LinearProbe,
        fine_tuning = FineTuning,
    }, new JsonSerializerOptions { WriteIndented = false });

    private string PretrainingJson() => JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(Model.ToJson()).RootElement,
        seed = Seed,
        pretraining_images_per_class = PretrainingImagesPerClass,
        pretraining = Pretraining,
    });

    /// <summary>Identity of the whole recipe: an expert made by another recipe is rebuilt, not reused, on resume.</summary>
    public string Hash => HashOf(ToJson());

    /// <summary>Identity of what the pre-trained model depends on: changing only the expert recipe reuses it.</summary>
    public string PretrainingHash => HashOf(PretrainingJson());

    private static string HashOf(string json) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16];
}
