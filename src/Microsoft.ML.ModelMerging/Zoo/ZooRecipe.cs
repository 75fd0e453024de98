using Microsoft.ML.ModelMerging.Pools;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>
/// How a zoo is made, in one place. The pre-trained model learns generic features from a corpus that shares no label with
/// the benchmark, so it is a fair starting point for every task, as CLIP is for the standard benchmark. Experts are then
/// made as FusionBench's are: a head on frozen pre-trained features, kept frozen while the whole backbone is fine-tuned on
/// the task — so heads are per task and task vectors live in the backbone.
/// The head is made from only <see cref="LinearProbeShots"/> images per class. CLIP's zero-shot heads are weak (about half
/// the fine-tuned accuracy on the standard tasks) and fine-tuning moves the features to them; a probe fitted on all training
/// images would instead do most of the work on frozen features, leave little in the task vectors, and make merging look easy
/// (measured: the pre-trained model with full-data probes reached 96% of the experts' accuracy).
/// <para>
/// The default recipe (v4) is the faithful miniature: 32×32 RGB, a 6-layer backbone pre-trained on the broad corpus,
/// CLIP-style prototype heads (<see cref="ExpertHeadKind.Prototype"/>: a wrong expert leaves such a head uncertain, as
/// CLIP's text heads are, so entropy minimisation can tell the experts apart; a linear probe trained to convergence is
/// confident on anything), and *local* fine-tuning outside the MLPs, as CLIP experts are fine-tuned at lr 1e-5: the MLPs at
/// lr 1e-3 and every other tensor at a fiftieth of it (2e-5) for 20 epochs, so attention and embeddings stay near the
/// pre-trained model, the task vectors live in the MLPs and the experts are strong (with one rate for all, v2, a third of
/// each task vector sat outside the MLPs and oracle routing of the MLPs kept only 80% of the experts; v4 keeps 99.7%).
/// <see cref="NonLocal"/> keeps v2's fine-tuning and linear-probe heads. <see cref="Far"/> is the first zoo's recipe (28×28
/// gray, glyph corpus, fine-tuning at lr 3e-4 that moves far), kept as the stress case <c>zoos/far</c>.
/// </para>
/// </summary>
public sealed record ZooRecipe
{
    /// <summary>The pre-training corpus of <see cref="BroadPretrainingCorpus"/> (default).</summary>
    public const string BroadCorpus = BroadPretrainingCorpus.Name;

    /// <summary>The broad corpus plus photographic settings (<see cref="BroadPretrainingCorpus.WithSettingsName"/>).</summary>
    public const string SettingsCorpus = BroadPretrainingCorpus.WithSettingsName;

    /// <summary>The glyph corpus of <see cref="PretrainingCorpus"/> (the far zoo's).</summary>
    public const string GlyphCorpus = PretrainingCorpus.Name;

    /// <summary>Every pre-training corpus a recipe can name.</summary>
    public static IReadOnlyList<string> Corpora { get; } = [BroadCorpus, SettingsCorpus, GlyphCorpus];

    /// <summary>The backbone's configuration (default: 32×32 RGB, patch 8, width 96, 6 layers, 4 heads, CLIP's mean and std).</summary>
    public VisionTransformerConfig Model { get; init; } = new()
    {
        ImageSize = 32, Channels = 3, PatchSize = 8, Width = 96, Layers = 6, Heads = 4, MlpSize = 384,
        Activation = VisionActivation.QuickGelu,
        Mean = VisionTransformerConfig.ClipMean, Std = VisionTransformerConfig.ClipStd,
    };

    /// <summary>Seed of the whole build: the corpus and pre-training use it, foundation f uses Seed + f, expert i Seed + 1 + i.</summary>
    public int Seed { get; init; }

    /// <summary>Which corpus pre-trains the backbone: <see cref="BroadCorpus"/>, <see cref="SettingsCorpus"/> or <see cref="GlyphCorpus"/>.</summary>
    public string Corpus { get; init; } = BroadCorpus;

    /// <summary>Pre-training images per class (default 300).</summary>
    public int PretrainingImagesPerClass { get; init; } = 300;
    /// <summary>The pre-training's settings (default: 10 epochs, batch 128, lr 1e-3, weight decay 0.05, shifts of up to 2 pixels).</summary>
    public TrainingOptions Pretraining { get; init; } = new() { Epochs = 10, BatchSize = 128, LearningRate = 1e-3, WeightDecay = 0.05, MaxShift = 2 };
    /// <summary>Images per class the linear-probe head is fitted on (seeded, stratified choice from the training split).</summary>
    public int LinearProbeShots { get; init; } = 4;
    /// <summary>
    /// How each expert's frozen head is made from the shots (default, v4: class prototypes, CLIP-style, under which a wrong
    /// expert leaves the head uncertain; the non-local and far recipes keep the trained linear probe).
    /// </summary>
    public ExpertHeadKind Head { get; init; } = ExpertHeadKind.Prototype;
    /// <summary>Linear probe on cached frozen features of the shots: cheap, so many epochs (one step each).</summary>
    public TrainingOptions LinearProbe { get; init; } = new() { Epochs = 200, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 };
    /// <summary>
    /// Fine-tuning (v3): 20 epochs, the MLPs at lr 1e-3 and everything else at 0.02 × that, so experts stay near the
    /// pre-trained model outside the MLPs.
    /// </summary>
    public TrainingOptions FineTuning { get; init; } = new()
    {
        Epochs = 20, BatchSize = 64, LearningRate = 1e-3, WeightDecay = 0.05, MaxShift = 1, NonMlpLearningRateScale = 0.02,
    };

    /// <summary>The v2 recipe's fine-tuning: every tensor at lr 5e-5 for 10 epochs (the non-local zoo's experts).</summary>
    public static TrainingOptions UniformLocalFineTuning { get; } = new() { Epochs = 10, BatchSize = 64, LearningRate = 5e-5, WeightDecay = 0.05, MaxShift = 1 };

    /// <summary>
    /// How many differently seeded pre-trained backbones the experts start from: 1 (every expert from the same base, a
    /// local zoo) or more (a non-local zoo: foundation f is pre-trained with seed <c>Seed + f</c>, task i's expert is
    /// fine-tuned from foundation <c>i mod Foundations</c>, and the pool's base is the mean of the foundations).
    /// </summary>
    public int Foundations { get; init; } = 1;

    /// <summary>The tasks <see cref="ZooBuilder"/> makes experts for when none are named: the benchmark the corpus was chosen against.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<BenchmarkTask> Tasks => Corpus == GlyphCorpus ? BenchmarkTasks.Far : BenchmarkTasks.Default;

    /// <summary>The first zoo's recipe (<c>zoos/far</c>): far fine-tuning of a 4-layer gray model pre-trained on glyphs.</summary>
    public static ZooRecipe Far { get; } = new()
    {
        Model = new()
        {
            ImageSize = 28, Channels = 1, PatchSize = 7, Width = 96, Layers = 4, Heads = 4, MlpSize = 384,
            Activation = VisionActivation.QuickGelu,
        },
        Corpus = GlyphCorpus,
        Head = ExpertHeadKind.LinearProbe,
        PretrainingImagesPerClass = 200,
        Pretraining = new() { Epochs = 8, BatchSize = 128, LearningRate = 1e-3, WeightDecay = 0.05, MaxShift = 2 },
        LinearProbeShots = 2,
        FineTuning = new() { Epochs = 8, BatchSize = 64, LearningRate = 3e-4, WeightDecay = 0.05, MaxShift = 1 },
    };

    /// <summary>The default recipe shrunk to check the whole pipeline in minutes (tiny corpus, one epoch): not a zoo to measure.</summary>
    public static ZooRecipe Smoke { get; } = new()
    {
        PretrainingImagesPerClass = 8,
        Pretraining = new() { Epochs = 1, BatchSize = 128, LearningRate = 1e-3, WeightDecay = 0.05, MaxShift = 2 },
        LinearProbe = new() { Epochs = 20, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 },
        FineTuning = new() { Epochs = 1, BatchSize = 64, LearningRate = 5e-5, WeightDecay = 0.05, MaxShift = 1 },
    };

    /// <summary>
    /// The non-local zoo's recipe (<c>zoos/nonlocal</c>): the default recipe's tasks and v2's fine-tuning, but experts fine-tuned
    /// from two pre-trained backbones that differ only in their seed, as in the non-local merging paper's VGG16 A/B setting.
    /// Foundation 0 is the default zoo's pre-trained model (same pre-training, same seed); foundation 1 is a second one.
    /// </summary>
    public static ZooRecipe NonLocal { get; } = new()
    {
        Foundations = 2, FineTuning = UniformLocalFineTuning, Corpus = BroadCorpus, Head = ExpertHeadKind.LinearProbe,
    };

    /// <summary>The recipe called <paramref name="name"/>: <c>default</c>, <c>far</c>, <c>nonlocal</c> or <c>smoke</c>.</summary>
    public static ZooRecipe Named(string name) => name.Trim().ToLowerInvariant() switch
    {
        "default" => new ZooRecipe(),
        "far" => Far,
        "nonlocal" => NonLocal,
        "smoke" => Smoke,
        _ => throw new ArgumentException($"Unknown zoo recipe '{name}': default, far, nonlocal or smoke."),
    };

    /// <summary>The seed foundation <paramref name="foundation"/> is pre-trained with.</summary>
    public int FoundationSeed(int foundation) => Seed + foundation;

    /// <summary>The foundation task <paramref name="taskIndex"/>'s expert is fine-tuned from.</summary>
    public int FoundationOf(int taskIndex) => taskIndex % Foundations;

    /// <summary>Where foundation <paramref name="foundation"/> is stored in a non-local pool, relative to the pool.</summary>
    public static string FoundationPath(int foundation) => $"foundations/foundation-{foundation}.safetensors";

    /// <summary>The recipe as JSON, the text <see cref="Hash"/> is taken of (and what <c>pool.json</c> records).</summary>
    public string ToJson() => JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(Model.ToJson()).RootElement,
        seed = Seed,
        pretraining_corpus = CorpusForJson,
        pretraining_images_per_class = PretrainingImagesPerClass,
        pretraining = Pretraining,
        linear_probe_shots = LinearProbeShots,
        linear_probe = LinearProbe,
        // Recorded only when it is not the linear probe, so the hashes of pools built before it stay what they were.
        head = Head == ExpertHeadKind.LinearProbe ? null : "prototype",
        fine_tuning = FineTuning,
        foundations = Foundations == 1 ? (int?)null : Foundations,
    }, IgnoreNulls);

    private string PretrainingJson(int seed) => JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(Model.ToJson()).RootElement,
        seed,
        pretraining_corpus = CorpusForJson,
        pretraining_images_per_class = PretrainingImagesPerClass,
        pretraining = Pretraining,
    }, IgnoreNulls);

    // The corpus is recorded only when it is not the glyph corpus, so the far zoo's recorded hashes stay what they were.
    private string? CorpusForJson => Corpus == GlyphCorpus ? null : Corpus;

    private static readonly JsonSerializerOptions IgnoreNulls = new() { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Identity of the whole recipe: an expert made by another recipe is rebuilt, not reused, on resume.</summary>
    public string Hash => HashOf(ToJson());

    /// <summary>Identity of what the pre-trained model depends on: changing only the expert recipe reuses it.</summary>
    public string PretrainingHash => FoundationPretrainingHash(0);

    /// <summary>
    /// Identity of foundation <paramref name="foundation"/>'s pre-training: foundation 0 of a non-local recipe is the same
    /// model as a local recipe's pre-trained backbone, so an existing one is reused.
    /// </summary>
    public string FoundationPretrainingHash(int foundation) => HashOf(PretrainingJson(FoundationSeed(foundation)));

    private static string HashOf(string json) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16];
}
