using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class ImageDatasetTests
{
    private static readonly string[] Classes = ["x", "y"];

    [TestMethod]
    public void FingerprintIsSha256OfLittleEndianPixelsThenLabels()
    {
        float[] pixels = [0f, 0.25f, 0.5f, 1f, 0.125f, 0.75f];
        int[] labels = [1, 0, 1];
        var data = new ImageDataset("d", pixels, labels, Classes, 1, 1, 2);

        // The same bytes laid out by hand.
        var bytes = new byte[pixels.Length * 4 + labels.Length * 4];
        for (int i = 0; i < pixels.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), pixels[i]);
        }

        for (int i = 0; i < labels.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * (pixels.Length + i)), labels[i]);
        }

        Assert.AreEqual(Convert.ToHexStringLower(SHA256.HashData(bytes)), data.Fingerprint);
        Assert.AreNotEqual(data.Fingerprint, new ImageDataset("d", pixels, [1, 0, 0], Classes, 1, 1, 2).Fingerprint);
    }

    [TestMethod]
    public void SelectCopiesImagesAndLabelsInOrder()
    {
        var data = new ImageDataset("d", [0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f], [0, 1, 1], Classes, 1, 2, 1);

        ImageDataset picked = data.Select([2, 0, 2], "picked");

        Assert.AreEqual("picked", picked.Name);
        CollectionAssert.AreEqual(new[] { 0.5f, 0.6f, 0.1f, 0.2f, 0.5f, 0.6f }, picked.Pixels.ToArray());
        CollectionAssert.AreEqual(new[] { 1, 0, 1 }, picked.Labels.ToArray());
        CollectionAssert.AreEqual(new[] { 1, 2 }, picked.CountPerClass());
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => data.Select([3]));
    }

    [TestMethod]
    public void InvalidContentIsRejected()
    {
        Assert.ThrowsExactly<ArgumentException>(() => new ImageDataset("d", new float[5], [0, 1], Classes, 1, 1, 2));
        Assert.ThrowsExactly<ArgumentException>(() => new ImageDataset("d", new float[4], [0, 2], Classes, 1, 1, 2));
        Assert.ThrowsExactly<ArgumentException>(() => new ImageDataset("d", [0f, 1.5f, 0f, 0f], [0, 1], Classes, 1, 1, 2));
        Assert.ThrowsExactly<ArgumentException>(() => new ImageDataset("d", [0f, float.NaN, 0f, 0f], [0, 1], Classes, 1, 1, 2));
        Assert.ThrowsExactly<ArgumentException>(() => new ImageDataset("d", new float[4], [0, 1], ["x", "x"], 1, 1, 2));
    }

    [TestMethod]
    public void ToTensorIsNchwCopy()
    {
        float[] pixels = Enumerable.Range(0, 2 * 3 * 2 * 2).Select(i => i / 24f).ToArray();
        var data = new ImageDataset("d", pixels, [1, 0], Classes, 3, 2, 2);

        using var tensor = data.ToTensor();
        using var labels = data.LabelsToTensor();

        CollectionAssert.AreEqual(new long[] { 2, 3, 2, 2 }, tensor.shape);
        Assert.AreEqual(pixels[1 * 12 + 2 * 4 + 1 * 2 + 0], tensor[1, 2, 1, 0].item<float>());
        CollectionAssert.AreEqual(new long[] { 1, 0 }, labels.data<long>().ToArray());
        tensor.fill_(0f);
        Assert.AreEqual(pixels[^1], data.Pixels.Span[^1], "the data set keeps its own pixels");
    }

    [TestMethod]
    public void SplitsMustShareClassesAndShape()
    {
        var a = new ImageDataset("a", new float[2], [0, 1], Classes, 1, 1, 1);
        var b = new ImageDataset("b", new float[2], [0, 1], ["x", "z"], 1, 1, 1);
        var c = new ImageDataset("c", new float[4], [0, 1], Classes, 1, 2, 1);

        Assert.AreEqual(new SplitSizes(2, 2, 2), new TaskSplits(a, a, a).Sizes);
        Assert.ThrowsExactly<ArgumentException>(() => new TaskSplits(a, b, a));
        Assert.ThrowsExactly<ArgumentException>(() => new TaskSplits(a, a, c));
    }
}
