using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class StableSeedTests
{
    // FNV-1a 64 over (seed as 8 LE bytes, expert index as 8 LE bytes, UTF-8 name), then SplitMix64's finaliser,
    // computed independently with Python integers. A change here changes every DARE mask ever produced.
    [TestMethod]
    [DataRow(42L, 1, "blocks.0.attn.weight", 2271881942617272800UL)]
    [DataRow(0L, 0, "", 7526961181645162559UL)]
    [DataRow(-7L, 3, "vision_model.encoder.layers.11.mlp.fc2.weight", 4356500326027844539UL)]
    public void DerivedSeedsArePinned(long seed, int expertIndex, string tensorName, ulong expected) =>
        Assert.AreEqual(expected, StableSeed.Derive(seed, expertIndex, tensorName));
}
