using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

[TestClass]
public sealed class ZooBuilderTests
{
    /// <summary>The real recipe's stages on a model and data small enough for a test.</summary>
    private static ZooRecipe Tiny => new()
    {
        Model = new VisionTransformerConfig { ImageSize = 28, Channels = 1, PatchSize = 7, Width = 16, Layers = 1, Heads = 2, MlpSize = 32 },
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
