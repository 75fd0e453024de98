using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

[TestClass]
public sealed class PoolAlignmentTests
{
    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void PermutedZooExpertWithItsHeadGivesTheSameLogitsOnRealImages()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, ["mnist", "glyph-letters"]);
        var spec = VisionTransformerPermutations.Spec(pool.Config);
        foreach (var (task, seed) in new[] { ("mnist", 1), ("glyph-letters", 2) })
        {
            var permutation = PermutationSet.Random(spec, seed);
            var permuted = permutation.Apply(spec, pool.Expert(task));
            using var head = permutation.Apply(pool.Head(task), VisionTransformerPermutations.HeadFeatures(pool.Config));
            Tensor images = AlignmentTestPools.TestImages(pool, task, 64);

            Tensor original = AlignmentTestPools.Logits(pool.Config, pool.Expert(task), pool.Head(task), images);
            Tensor moved = AlignmentTestPools.Logits(pool.Config, permuted, head, images);

            Assert.IsGreaterThan(1.0, WeightDistance.L2(pool.Expert(task), permuted), $"{task}: the weights moved");
            Assert.IsLessThanOrEqualTo(1e-5, ModelTestData.MaxAbsDiff(original, moved), $"{task}: same logits");
        }
    }

    [TestMethod]
    public void MatchingTwoDifferentZooExpertsLowersTheirDistance()
    {
        // The zoo's experts share their pre-trained base, so they start aligned: a random reordering of one of them is what
        // weight matching has to undo, against a different expert rather than against a copy.
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, ["mnist", "fashion-mnist", "glyph-digits"]);
        var spec = VisionTransformerPermutations.Spec(pool.Config);
        var reference = pool.Expert("mnist");
        foreach (var (task, seed) in new[] { ("fashion-mnist", 3), ("glyph-digits", 4) })
        {
            var asTrained = WeightMatching.Match(spec, reference, pool.Expert(task));
            double trained = WeightDistance.L2(reference, pool.Expert(task));
            double trainedAfter = WeightDistance.L2(reference, asTrained.Permutations.Apply(spec, pool.Expert(task)));

            var permuted = PermutationSet.Random(spec, seed).Apply(spec, pool.Expert(task));
            var result = WeightMatching.Match(spec, reference, permuted);
            double before = WeightDistance.L2(reference, permuted), after = WeightDistance.L2(reference, result.Permutations.Apply(spec, permuted));

            TestContext.WriteLine($"{task} to mnist: as trained {trained:F4} → {trainedAfter:F4} ({asTrained.Iterations} iterations); " +
                $"randomly reordered {before:F4} → {after:F4} ({result.Iterations} iterations)");
            Assert.IsLessThanOrEqualTo(trained + 1e-9, trainedAfter, $"{task}: never further than as trained");
            Assert.IsLessThan(0.5 * before, after, $"{task}: the reordering is undone");
            Assert.IsLessThanOrEqualTo(trained + 1e-4, after, $"{task}: at least as close as the shared base made it");
            Assert.IsTrue(result.Converged);
        }
    }

    [TestMethod]
    public void NonLocalPoolIsAlignedThroughItsFoundations()
    {
        using var scope = NewDisposeScope();
        using var directory = new TempDirectory();
        var far = PoolManifest.Read(CommittedZoo.Far);
        var spec = VisionTransformerPermutations.Spec(far.ModelConfig);
        string source = AlignmentTestPools.NonLocal(directory.File("source"), "mnist", "fashion-mnist", PermutationSet.Random(spec, seed: 9));
        using var sourcePool = ExpertPool.Load(source);
        string output = Path.Combine(directory.Path, "aligned");

        var result = PoolAlignment.Run(sourcePool, output, new PoolAlignmentOptions { Seed = 2 });

        Assert.IsTrue(result.NonLocal);
        Assert.HasCount(2, result.Foundations);
        Assert.IsGreaterThan(1.0, result.Foundations[1].DistanceBefore);
        Assert.IsLessThan(1e-6, result.Foundations[1].DistanceAfter, "the reordered foundation is matched exactly");
        Assert.IsLessThan(result.Experts[1].DistanceBefore, result.Experts[1].DistanceAfter);

        using var aligned = ExpertPool.Load(output);
        Assert.AreEqual(new PoolAlignmentRecord { Source = source, Reference = "mnist", Method = PoolAlignment.Method, Seed = 2 }, aligned.Manifest.Alignment);
        Assert.AreNotEqual(sourcePool.Manifest.Identity, aligned.Manifest.Identity);
        Assert.AreEqual(far.Task("fashion-mnist").Individual, aligned.Manifest.Task("fashion-mnist").Individual, "accuracies are kept");
        Assert.IsTrue(aligned.Tasks.All(t => t.Foundation is not null && File.Exists(Path.Combine(output, t.Foundation))));

        using var zoo = ExpertPool.Load(CommittedZoo.Far, ["fashion-mnist"]);
        Assert.IsLessThan(1e-6, WeightDistance.L2(zoo.Pretrained, aligned.Pretrained), "the mean of the aligned foundations is the zoo's base again");
        Assert.IsLessThan(1e-6, WeightDistance.L2(zoo.Expert("fashion-mnist"), aligned.Expert("fashion-mnist")), "the expert moved with its foundation");

        Tensor images = AlignmentTestPools.TestImages(zoo, "fashion-mnist", 64);
        Tensor before = AlignmentTestPools.Logits(sourcePool.Config, sourcePool.Expert("fashion-mnist"), sourcePool.Head("fashion-mnist"), images);
        Tensor after = AlignmentTestPools.Logits(aligned.Config, aligned.Expert("fashion-mnist"), aligned.Head("fashion-mnist"), images);
        Assert.IsLessThanOrEqualTo(1e-5, ModelTestData.MaxAbsDiff(before, after), "the aligned expert with its aligned head computes what it did");
    }

    [TestMethod]
    public void CancelledRunLeavesNothingBehind()
    {
        using var directory = new TempDirectory();
        using var pool = ExpertPool.Load(AlignmentTestPools.Subset(directory.File("source"), "mnist", "fashion-mnist"));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        string output = Path.Combine(directory.Path, "aligned");

        Assert.ThrowsExactly<OperationCanceledException>(() => PoolAlignment.Run(pool, output, cancellation: cancelled.Token));

        CollectionAssert.AreEquivalent(new[] { "source" }, Directory.EnumerateFileSystemEntries(directory.Path).Select(Path.GetFileName).ToArray());
    }

    [TestMethod]
    public void RefusesToWriteOverThePoolItself()
    {
        using var directory = new TempDirectory();
        using var pool = ExpertPool.Load(AlignmentTestPools.Subset(directory.File("source"), "mnist", "fashion-mnist"));
        var error = Assert.ThrowsExactly<ArgumentException>(() => PoolAlignment.Run(pool, directory.Path, new PoolAlignmentOptions { Force = true }));
        StringAssert.Contains(error.Message, "holds the pool being aligned");
    }
}
