using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

[TestClass]
public sealed class ActivationMatchingTests
{
    /// <summary>
    /// A randomly reordered copy of an expert has, for every unit, one unit of the original it correlates with perfectly:
    /// activation matching must find exactly the permutation that undoes the reordering, for every group.
    /// </summary>
    [TestMethod]
    public void RecoversARandomReorderingExactly()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, ["glyph-letters"]);
        var spec = VisionTransformerPermutations.Spec(pool.Config);
        var reference = pool.Expert("glyph-letters");
        var permuted = PermutationSet.Random(spec, seed: 5).Apply(spec, reference);
        Tensor images = AlignmentTestPools.TestImages(pool, "glyph-letters", 48);

        var found = ActivationMatching.Match(pool.Config, reference, permuted, images, chunk: 20);

        Assert.IsGreaterThan(1.0, WeightDistance.L2(reference, permuted));
        Assert.IsLessThan(1e-6, WeightDistance.L2(reference, found.Apply(spec, permuted)), "every unit is put back where it was");
    }

    [TestMethod]
    public void NonLocalPoolIsAlignedByActivationsAndRecordsTheMethod()
    {
        using var scope = NewDisposeScope();
        using var directory = new TempDirectory();
        var far = PoolManifest.Read(CommittedZoo.Far);
        var spec = VisionTransformerPermutations.Spec(far.ModelConfig);
        string source = AlignmentTestPools.NonLocal(directory.File("source"), "mnist", "fashion-mnist", PermutationSet.Random(spec, seed: 9));
        using var sourcePool = ExpertPool.Load(source);
        string output = Path.Combine(directory.Path, "aligned");

        var result = PoolAlignment.Run(sourcePool, output, new PoolAlignmentOptions { Method = PoolAlignment.ActivationMethod, ImagesPerTask = 24 });

        Assert.IsLessThan(1e-6, result.Foundations[1].DistanceAfter, "the reordered foundation is matched exactly");
        using var aligned = ExpertPool.Load(output);
        Assert.AreEqual(PoolAlignment.ActivationMethod, aligned.Manifest.Alignment!.Method);
        var error = Assert.ThrowsExactly<ArgumentException>(() => PoolAlignment.Run(sourcePool, Path.Combine(directory.Path, "other"),
            new PoolAlignmentOptions { Method = "optimal-transport" }));
        StringAssert.Contains(error.Message, "Unknown alignment method 'optimal-transport'");
    }
}
