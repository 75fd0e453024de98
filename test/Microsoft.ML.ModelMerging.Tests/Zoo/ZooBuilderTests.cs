using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

using Microsoft.ML.ModelMerging.Tests.Data;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

[TestClass]
public sealed class ZooBuilderTests
{
    /// <summary>The real recipe's stages on a model and data small enough for a test.</summary>
    private static ZooRecipe Tiny => new()
    {
        Model = new VisionTransformerConfig { ImageSize = 28, Channels = 1, PatchSize = 7, Width = 16, Layers = 1, Heads = 2, MlpSize = 32 },
        Corpus = ZooRecipe.GlyphCorpus,
        PretrainingImagesPerClass = 4,
        Pretraining = new TrainingOptions { Epochs = 1, BatchSize = 64 },
        LinearProbe = new TrainingOptions { Epochs = 2, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0 },
        FineTuning = new TrainingOptions { Epochs = 1, BatchSize = 128, LearningRate = 3e-4 },
    };

    [TestMethod]
    public void BuildIsDeterministicAndResumesWithoutRetraining()
    {
        if (!File.Exists(BenchmarkSources.Default.OpticalDigitsFile)) Assert.Inconclusive("optical digits not installed (run ./build.sh build)");
        using var a = new TempDirectory();
        using var b = new TempDirectory();
        var tasks = new[] { BenchmarkTasks.OpticalDigits };
        var first = new ZooBuilder(Tiny).Build(a.Path, tasks);
        var second = new ZooBuilder(Tiny).Build(b.Path, tasks);
        CollectionAssert.AreEqual(File.ReadAllBytes(a.File("experts/optical-digits.safetensors")), File.ReadAllBytes(b.File("experts/optical-digits.safetensors")),
            "the same recipe and seed give the same bytes");
        Assert.AreEqual(first.ToJson(), second.ToJson());

        // Resume: a finished artifact is reused, not retrained; a missing one is rebuilt identically.
        var expertTime = File.GetLastWriteTimeUtc(a.File("experts/optical-digits.safetensors"));
        var again = new ZooBuilder(Tiny).Build(a.Path, tasks);
        Assert.AreEqual(expertTime, File.GetLastWriteTimeUtc(a.File("experts/optical-digits.safetensors")));
        Assert.AreEqual(first.ToJson(), again.ToJson());

        // Another recipe does not reuse artifacts stamped by this one.
        var other = Tiny with { Seed = 1 };
        var rebuilt = new ZooBuilder(other).Build(a.Path, tasks);
        Assert.AreNotEqual(first.RecipeHash, rebuilt.RecipeHash);
        Assert.AreNotEqual(expertTime, File.GetLastWriteTimeUtc(a.File("experts/optical-digits.safetensors")));
    }

    /// <summary>A recipe with prototype heads writes CLIP-kind heads the pool loads and scores with, and records the choice.</summary>
    [TestMethod]
    public void PrototypeHeadRecipeWritesClipHeads()
    {
        if (!File.Exists(BenchmarkSources.Default.OpticalDigitsFile)) Assert.Inconclusive("optical digits not installed (run ./build.sh build)");
        using var dir = new TempDirectory();
        var recipe = Tiny with { Head = ExpertHeadKind.Prototype };
        var manifest = new ZooBuilder(recipe).Build(dir.Path, [BenchmarkTasks.OpticalDigits]);
        StringAssert.Contains(File.ReadAllText(dir.File("pool.json")), "\"head\": \"prototype\"");
        Assert.AreEqual(recipe.Hash, manifest.RecipeHash);
        using var experts = ExpertPool.Load(dir.Path);
        var head = experts.Head("optical-digits");
        Assert.AreEqual(ClassificationHeadKind.Clip, head.Kind);
        Assert.IsGreaterThanOrEqualTo(1.0, head.LogitScale!.item<float>());
        // The pre-trained accuracy recorded is that head's on the pre-trained model (well above chance on ten classes).
        Assert.IsGreaterThan(0.15, manifest.Task("optical-digits").PretrainedLinearProbe.Test);
    }

    /// <summary>The default recipe's pipeline (broad RGB corpus, an RGB task) on a tiny model: the pool it writes is RGB 32×32.</summary>
    [TestMethod]
    public void DefaultRecipeBuildsAnRgbPool()
    {
        RealData.Fonts();
        using var dir = new TempDirectory();
        var recipe = new ZooRecipe
        {
            Model = new VisionTransformerConfig
            {
                ImageSize = 32, Channels = 3, PatchSize = 8, Width = 16, Layers = 1, Heads = 2, MlpSize = 32,
                Mean = VisionTransformerConfig.ClipMean, Std = VisionTransformerConfig.ClipStd,
            },
            PretrainingImagesPerClass = 2,
            Pretraining = new TrainingOptions { Epochs = 1, BatchSize = 128 },
            LinearProbe = new TrainingOptions { Epochs = 2, BatchSize = 256, LearningRate = 1e-2, WeightDecay = 0 },
            FineTuning = new TrainingOptions { Epochs = 1, BatchSize = 128, LearningRate = 5e-5 },
        };
        Assert.AreSame(BenchmarkTasks.Default, recipe.Tasks);
        var manifest = new ZooBuilder(recipe).Build(dir.Path, [BenchmarkTasks.Textures]);
        Assert.AreEqual(ZooRecipe.BroadCorpus, manifest.Pretraining!.Corpus);
        Assert.AreEqual(BroadPretrainingCorpus.ClassNames.Count, manifest.Pretraining.Classes);
        using var experts = ExpertPool.Load(dir.Path);
        Assert.AreEqual((3, 32), (experts.Config.Channels, experts.Config.ImageSize));
        Assert.AreEqual(BenchmarkTasks.Textures.Load().Test.Fingerprint, manifest.Task("textures").Fingerprints["test"]);
    }

    /// <summary>The far recipe is the one the first zoo was built with: its hash is unchanged by the corpus field added for v2.</summary>
    [TestMethod]
    public void FarRecipeKeepsTheFirstZoosHash()
    {
        Assert.AreEqual(PoolManifest.Read(CommittedZoo.Far).RecipeHash, ZooRecipe.Far.Hash);
        Assert.AreNotEqual(ZooRecipe.Far.Hash, new ZooRecipe().Hash);
        Assert.AreSame(BenchmarkTasks.Far, ZooRecipe.Far.Tasks);
    }

    [TestMethod]
    public void CancelledBuildLeavesOnlyCompleteArtifacts()
    {
        if (!File.Exists(BenchmarkSources.Default.OpticalDigitsFile)) Assert.Inconclusive("optical digits not installed (run ./build.sh build)");
        using var dir = new TempDirectory();
        using var cancel = new CancellationTokenSource();
        var progress = new SynchronousProgress<ZooBuildProgress>(p => { if (p.StageIndex == 1 && p.Training is { Step: 2 }) cancel.Cancel(); });
        Assert.ThrowsExactly<OperationCanceledException>(() => new ZooBuilder(Tiny).Build(dir.Path, new[] { BenchmarkTasks.OpticalDigits }, progress, cancel.Token));
        Assert.IsTrue(File.Exists(dir.File(PoolManifest.PretrainedFileName)), "the finished pre-training stage is kept");
        Assert.IsFalse(File.Exists(dir.File("experts/optical-digits.safetensors")));
        Assert.IsFalse(File.Exists(dir.File(PoolManifest.FileName)));
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, "*.partial", SearchOption.AllDirectories).Length);
    }
}
