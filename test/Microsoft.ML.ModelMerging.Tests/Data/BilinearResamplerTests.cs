using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class BilinearResamplerTests
{
    [TestMethod]
    public void TwoByTwoToFourByFourMatchesHandComputedValues()
    {
        // Pixel-centre alignment: output i samples source (i + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25, clamped to 0, .25, .75, 1.
        // Source [[0, 1], [2, 3]] is 2y + x, so the output is 2·ys + xs over those coordinates.
        float[] expected =
        [
            0.0f, 0.25f, 0.75f, 1.0f,
            0.5f, 0.75f, 1.25f, 1.5f,
            1.5f, 1.75f, 2.25f, 2.5f,
            2.0f, 2.25f, 2.75f, 3.0f,
        ];
        var output = new float[16];

        new BilinearResampler(2, 2, 4, 4).Resize([0, 1, 2, 3], output);

        CollectionAssert.AreEqual(expected, output);
    }

    [TestMethod]
    public void WrongBufferSizesAreRejected()
    {
        var resampler = new BilinearResampler(2, 2, 4, 4);

        Assert.ThrowsExactly<ArgumentException>(() => resampler.Resize(new float[3], new float[16]));
        Assert.ThrowsExactly<ArgumentException>(() => resampler.Resize(new float[4], new float[15]));
    }
}
