using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>
/// How the zoo is made, in one place. The pre-trained model learns generic glyph features from a vocabulary the benchmark
/// never uses (Greek, Cyrillic, Hebrew, symbols...), so it is a fair starting point for every task, as CLIP is for the
/// standard benchmark. Experts are then made as FusionBench's are: a linear-probe head on frozen pre-trained features, kept
/// frozen while the whole backbone is fine-tuned on the task — so heads are per task and task vectors live in the backbone.
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
    /// <summary>Linear probe on cached frozen features: cheap, so many epochs.</summary>
    public TrainingOptions LinearProbe { get; init; } = new() { Epochs = 40, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 };
    public TrainingOptions FineTuning { get; init; } = new() { Epochs = 8, BatchSize = 64, LearningRate = 3e-4, WeightDecay = 0.05, MaxShift = 1 };

    public string ToJson() => JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(Model.ToJson()).RootElement,
        seed = Seed,
        pretraining_images_per_class = PretrainingImagesPerClass,
        pretraining = Pretraining,
        linear_probe = LinearProbe,
        fine_tuning = FineTuning,
    }, new JsonSerializerOptions { WriteIndented = false });

    /// <summary>Identity of the recipe: an artifact made by another recipe is rebuilt, not reused, on resume.</summary>
    public string Hash => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson())))[..16];
}
