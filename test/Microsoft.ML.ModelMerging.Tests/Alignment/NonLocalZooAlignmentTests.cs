using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

/// <summary>The committed non-local zoo: differently seeded foundations that alignment brings closer without changing what an expert computes.</summary>
[TestClass]
public sealed class NonLocalZooAlignmentTests
{
    [TestMethod]
    public void MatchingTheFoundationsLowersTheirDistanceAndKeepsTheExpertsPredictions()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(CommittedZoo.NonLocal, ["fashion-photos"]);
        Assert.AreEqual(ZooRecipe.FoundationPath(1), pool.Manifest.Task("fashion-photos").Foundation);
        using var reference = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.NonLocal, ZooRecipe.FoundationPath(0)));
        using var other = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.NonLocal, ZooRecipe.FoundationPath(1)));
        var spec = VisionTransformerPermutations.Spec(pool.Config);

        var matched = WeightMatching.Match(spec, reference.Weights, other.Weights);
        double before = WeightDistance.L2(reference.Weights, other.Weights);
        double after = WeightDistance.L2(reference.Weights, matched.Permutations.Apply(spec, other.Weights));

        Assert.IsTrue(matched.Converged);
        Assert.IsGreaterThan(10 * WeightDistance.L2(pool.Expert("fashion-photos"), other.Weights), before,
            "the other foundation is far further than fine-tuning moved the expert from its own");
        Assert.IsLessThan(0.95 * before, after, "weight matching brings the foundations closer");

        // The expert of foundation 1, moved with its foundation's permutation, predicts what it did.
        var moved = matched.Permutations.Apply(spec, pool.Expert("fashion-photos"));
        using var head = matched.Permutations.Apply(pool.Head("fashion-photos"), VisionTransformerPermutations.HeadFeatures(pool.Config));
        Tensor images = AlignmentTestPools.TestImages(pool, "fashion-photos", 48);
        Tensor original = AlignmentTestPools.Logits(pool.Config, pool.Expert("fashion-photos"), pool.Head("fashion-photos"), images);
        Tensor aligned = AlignmentTestPools.Logits(pool.Config, moved, head, images);
        Assert.IsLessThanOrEqualTo(1e-5, ModelTestData.MaxAbsDiff(original, aligned));
    }
}
