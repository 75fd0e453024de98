using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

[TestClass]
public sealed class VisionTransformerPermutationTests
{
    public TestContext TestContext { get; set; } = null!;

    public static IEnumerable<object[]> Configs =>
    [
        [ModelTestData.TinyGray()],
        [ModelTestData.TinyGray(layers: 1, activation: VisionActivation.Gelu, projectionDim: 12)],
        [ModelTestData.TinyRgb()],                                                                   // 3 heads, projection
        [new VisionTransformerConfig { ImageSize = 28, Channels = 1, PatchSize = 7, Width = 20, Layers = 2, Heads = 5, MlpSize = 36 }],
    ];

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void RandomPermutationOfEveryGroupKeepsTheFunction(VisionTransformerConfig config)
    {
        using var scope = NewDisposeScope();
        var spec = VisionTransformerPermutations.Spec(config);
        var weights = ToDouble(ModelTestData.RandomWeights(config, seed: 3));
        var permutation = PermutationSet.Random(spec, seed: 5);
        var permuted = permutation.Apply(spec, weights);
        using var linear = ClassificationHead.Linear(["a", "b", "c", "d"], randn(4, config.FeatureDim, dtype: ScalarType.Float64), randn(4, dtype: ScalarType.Float64));
        using var clip = ClassificationHead.Clip(["a", "b", "c"], randn(3, config.FeatureDim, dtype: ScalarType.Float64), logitScale: 50);
        string? features = VisionTransformerPermutations.HeadFeatures(config);
        using var permutedLinear = permutation.Apply(linear, features);
        using var permutedClip = permutation.Apply(clip, features);

        Assert.IsGreaterThan(0.1, WeightDistance.L2(weights, permuted), "the permutation moved the weights");
        Tensor images = ModelTestData.Images(config, batch: 4, seed: 1).to(ScalarType.Float64);
        Tensor original = VisionTransformer.Forward(config, weights, images), moved = VisionTransformer.Forward(config, permuted, images);
        if (config.ProjectionDim is null)
        {
            Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(original, moved), "features are the permuted residual stream");
            Assert.IsLessThan(1e-10, ModelTestData.MaxAbsDiff(original.index_select(1, tensor(permutation[VisionTransformerPermutations.Residual].Select(i => (long)i).ToArray())), moved));
        }
        else
        {
            Assert.IsLessThan(1e-10, ModelTestData.MaxAbsDiff(original, moved), "a visual projection leaves the stream");
        }

        Assert.IsLessThan(1e-10, ModelTestData.MaxAbsDiff(linear.Forward(original), permutedLinear.Forward(moved)));
        Assert.IsLessThan(1e-10, ModelTestData.MaxAbsDiff(clip.Forward(original), permutedClip.Forward(moved)));
    }

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void WeightMatchingRecoversARandomlyPermutedCopyExactly(VisionTransformerConfig config)
    {
        using var scope = NewDisposeScope();
        var spec = VisionTransformerPermutations.Spec(config);
        var weights = ModelTestData.RandomWeights(config, seed: 4);
        var permutation = PermutationSet.Random(spec, seed: 6);
        var permuted = permutation.Apply(spec, weights);

        var result = WeightMatching.Match(spec, weights, permuted, new WeightMatchingOptions { Seed = 1 });
        var recovered = result.Permutations.Apply(spec, permuted);

        Assert.IsTrue(result.Converged);
        Assert.AreEqual(0.0, WeightDistance.L2(weights, recovered), "every tensor back in place");
        var inverse = permutation.Inverse();
        foreach (string name in spec.Sizes.Keys) CollectionAssert.AreEqual(inverse[name], result.Permutations[name], name);
    }

    /// <summary>
    /// In a wider model, plain coordinate descent from the identity does not find a reordered copy: its first steps weigh
    /// every matrix whose second axis is still wrongly ordered, and that noise drowns the exact evidence of the embeddings
    /// and LayerNorm parameters (a ViT-B/32-size copy was not recovered this way). The seeding pass solves the groups in
    /// the order the exact evidence allows, and matching, which keeps the better of both descents, recovers it exactly.
    /// </summary>
    [TestMethod]
    public void SeedingRecoversACopyThatPlainDescentMisses()
    {
        using var scope = NewDisposeScope();
        var config = new VisionTransformerConfig { ImageSize = 16, Channels = 3, PatchSize = 4, Width = 256, Layers = 8, Heads = 4, MlpSize = 1024 };
        var spec = VisionTransformerPermutations.Spec(config);
        var weights = ModelTestData.RandomWeights(config, seed: 11);
        var permutation = PermutationSet.Random(spec, seed: 12);
        var permuted = permutation.Apply(spec, weights);
        var options = new WeightMatchingOptions { Seed = 1 };

        var plain = WeightMatching.Descend(spec, weights, permuted, PermutationSet.Identity(spec), options, CancellationToken.None);
        var result = WeightMatching.Match(spec, weights, permuted, options);

        double plainDistance = WeightDistance.L2(weights, plain.Permutations.Apply(spec, permuted));
        TestContext.WriteLine($"plain descent: {plainDistance:F3} after {plain.Iterations} passes; shuffled {WeightDistance.L2(weights, permuted):F3}");
        Assert.IsGreaterThan(1.0, plainDistance, "plain descent stops short of the copy (else this test shows nothing)");
        Assert.AreEqual(0.0, WeightDistance.L2(weights, result.Permutations.Apply(spec, permuted)), "every tensor back in place");
        var inverse = permutation.Inverse();
        foreach (string name in spec.Sizes.Keys) CollectionAssert.AreEqual(inverse[name], result.Permutations[name], name);
    }

    [TestMethod]
    public void MatchingAModelToItselfKeepsTheIdentityInOnePass()
    {
        var config = ModelTestData.TinyGray();
        var spec = VisionTransformerPermutations.Spec(config);
        var weights = ModelTestData.RandomWeights(config, seed: 8);
        var result = WeightMatching.Match(spec, weights, weights);
        Assert.AreEqual(1, result.Iterations);
        foreach (var (name, p) in result.Permutations.Values) CollectionAssert.AreEqual(Enumerable.Range(0, p.Length).ToArray(), p, name);
    }

    [TestMethod]
    public void SpecCoversEveryTensorAndRefusesMismatchedModels()
    {
        var config = ModelTestData.TinyRgb();
        var spec = VisionTransformerPermutations.Spec(config);
        CollectionAssert.AreEquivalent(VisionTransformerNames.Shapes(config).Select(s => s.Name).ToArray(), spec.Axes.Keys.ToArray());
        Assert.HasCount(1 + 2 * config.Layers, spec.Groups);

        var weights = ModelTestData.RandomWeights(config, seed: 1);
        var other = ModelTestData.RandomWeights(ModelTestData.TinyRgb() with { MlpSize = 24 }, seed: 1);
        var error = Assert.ThrowsExactly<ArgumentException>(() => WeightMatching.Match(spec, weights, other));
        StringAssert.Contains(error.Message, "fc1.weight");
    }

    private static Dictionary<string, Tensor> ToDouble(Dictionary<string, Tensor> weights) =>
        weights.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float64), StringComparer.Ordinal);
}
