using Microsoft.ML.ModelMerging.Merging;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class TensorFilterTests
{
    [TestMethod]
    [DataRow("head.weight", ScalarType.Float32, "name matches /^head\\./")]
    [DataRow("model.classifier.bias", ScalarType.Float32, "name matches /classifier/")]
    [DataRow("embeddings.position_ids", ScalarType.Float32, "name matches /position_ids/")]
    [DataRow("encoder.num_batches_tracked", ScalarType.Int64, "dtype Int64 is not floating")]
    [DataRow("encoder.mask", ScalarType.Bool, "dtype Bool is not floating")]
    [DataRow("encoder.head.weight", ScalarType.Float32, null)]
    [DataRow("encoder.layers.0.mlp.fc1.weight", ScalarType.BFloat16, null)]
    public void DefaultRuleExcludesHeadsPositionIdsAndNonFloatingTensors(string name, ScalarType dtype, string? reason)
    {
        Assert.AreEqual(reason, TensorFilter.Default.ExclusionReason(name, dtype));
        Assert.AreEqual(reason is null, TensorFilter.Default.ShouldMerge(name, dtype));
    }

    [TestMethod]
    public void ExtraPatternsExtendOrReplaceTheDefaults()
    {
        var extended = new TensorFilter([@"\.ln_\d"]);
        Assert.IsFalse(extended.ShouldMerge("blocks.3.ln_1.weight", ScalarType.Float32));
        Assert.IsFalse(extended.ShouldMerge("head.weight", ScalarType.Float32));

        var replaced = new TensorFilter([@"\.ln_\d"], includeDefaultPatterns: false);
        Assert.IsFalse(replaced.ShouldMerge("blocks.3.ln_1.weight", ScalarType.Float32));
        Assert.IsTrue(replaced.ShouldMerge("head.weight", ScalarType.Float32));
        Assert.IsFalse(replaced.ShouldMerge("head.steps", ScalarType.Int32), "non-floating tensors are never merged");
    }

    [TestMethod]
    public void InvalidPatternIsNamed()
    {
        var error = Assert.ThrowsExactly<ArgumentException>(() => new TensorFilter(["fc[1"]));
        Assert.StartsWith("Exclusion pattern 'fc[1' is not a valid regular expression", error.Message);
    }
}
