using System.Buffers.Binary;
using System.IO.Compression;
using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class IdxReaderTests
{
    private static readonly string[] ThreeClasses = ["zero", "one", "two"];

    // Three 2×3 images whose bytes are easy to predict: image i, pixel p holds 40·i + 10·p + 5.
    private static readonly byte[] ImageBytes = Enumerable.Range(0, 3).SelectMany(i => Enumerable.Range(0, 6).Select(p => (byte)(40 * i + 10 * p + 5))).ToArray();
    private static readonly byte[] LabelBytes = [2, 0, 1];

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void ReadsImagesAndLabelsPlainOrGzip(bool gzip)
    {
        using var dir = new TempDirectory();
        string images = Write(dir.File("images.idx"), Idx(0x0803, [3, 2, 3], ImageBytes), gzip);
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [3], LabelBytes), gzip);

        ImageDataset data = IdxReader.Read(images, labels, ThreeClasses, "tiny");

        Assert.AreEqual(3, data.Count);
        Assert.AreEqual(1, data.Channels);
        Assert.AreEqual(2, data.Height);
        Assert.AreEqual(3, data.Width);
        CollectionAssert.AreEqual(new[] { 2, 0, 1 }, data.Labels.ToArray());
        CollectionAssert.AreEqual(ImageBytes.Select(b => b / 255f).ToArray(), data.Pixels.ToArray());
        CollectionAssert.AreEqual(new[] { 2, 0, 1 }, IdxReader.ReadLabels(labels));
    }

    [TestMethod]
    public void SelectsIndicesInTheGivenOrder()
    {
        using var dir = new TempDirectory();
        string images = Write(dir.File("images.idx"), Idx(0x0803, [3, 2, 3], ImageBytes), gzip: true);
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [3], LabelBytes), gzip: false);

        ImageDataset data = IdxReader.Read(images, labels, ThreeClasses, indices: [2, 0]);

        CollectionAssert.AreEqual(new[] { 1, 2 }, data.Labels.ToArray());
        CollectionAssert.AreEqual(ImageBytes.Skip(12).Concat(ImageBytes.Take(6)).Select(b => b / 255f).ToArray(), data.Pixels.ToArray());
    }

    [TestMethod]
    public void WrongMagicNamesTheFileAndTheExpectedMagic()
    {
        using var dir = new TempDirectory();
        string images = Write(dir.File("images.idx"), Idx(0x0803, [3, 2, 3], ImageBytes), gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(images));

        Assert.Contains(images, error.Message);
        Assert.Contains("0x00000801", error.Message);
        Assert.Contains("0x00000803", error.Message);
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void TruncatedDataIsAnError(bool gzip)
    {
        using var dir = new TempDirectory();
        byte[] whole = Idx(0x0803, [3, 2, 3], ImageBytes);
        string images = Write(dir.File("images.idx"), whole[..^4], gzip);
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [3], LabelBytes), gzip);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.Read(images, labels, ThreeClasses));

        Assert.Contains(images, error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [TestMethod]
    public void TruncatedHeaderIsAnError()
    {
        using var dir = new TempDirectory();
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [3], LabelBytes)[..6], gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(labels));

        Assert.Contains(labels, error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [TestMethod]
    public void TrailingBytesAreAnError()
    {
        using var dir = new TempDirectory();
        string labels = Write(dir.File("labels.idx"), [.. Idx(0x0801, [3], LabelBytes), 7], gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(labels));

        Assert.Contains(labels, error.Message);
    }

    [TestMethod]
    public void ImageAndLabelCountsMustMatch()
    {
        using var dir = new TempDirectory();
        string images = Write(dir.File("images.idx"), Idx(0x0803, [3, 2, 3], ImageBytes), gzip: false);
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [2], LabelBytes[..2]), gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.Read(images, labels, ThreeClasses));

        Assert.Contains(images, error.Message);
        Assert.Contains(labels, error.Message);
        Assert.Contains("3 images", error.Message);
        Assert.Contains("2 labels", error.Message);
    }

    [TestMethod]
    public void LabelsBeyondTheClassesAreAnError()
    {
        using var dir = new TempDirectory();
        string images = Write(dir.File("images.idx"), Idx(0x0803, [3, 2, 3], ImageBytes), gzip: false);
        string labels = Write(dir.File("labels.idx"), Idx(0x0801, [3], [0, 1, 3]), gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.Read(images, labels, ThreeClasses));

        Assert.Contains(labels, error.Message);
    }

    [TestMethod]
    public void CorruptGzipNamesTheFile()
    {
        using var dir = new TempDirectory();
        byte[] compressed = Gzip(Idx(0x0801, [3], LabelBytes));
        compressed.AsSpan(10).Fill(0xFF);
        string labels = dir.File("labels.idx.gz");
        File.WriteAllBytes(labels, compressed);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(labels));

        Assert.Contains(labels, error.Message);
    }

    [TestMethod]
    public void MissingFileIsFileNotFound()
    {
        using var dir = new TempDirectory();
        string missing = Path.Combine(dir.Path, "absent.idx");

        var error = Assert.ThrowsExactly<FileNotFoundException>(() => IdxReader.ReadLabels(missing));

        Assert.Contains(missing, error.Message);
    }

    [TestMethod]
    public void RealFashionMnistHasTheDocumentedCounts()
    {
        string dir = RealData.Sources.FashionMnistDirectory;
        RealData.Require(Path.Combine(dir, "train-labels-idx1-ubyte.gz"), "Fashion-MNIST");

        int[] train = IdxReader.ReadLabels(Path.Combine(dir, "train-labels-idx1-ubyte.gz"));
        int[] test = IdxReader.ReadLabels(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"));
        ImageDataset testImages = IdxReader.Read(
            Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"),
            BenchmarkTasks.FashionMnist.ClassNames, indices: [0, 1]);

        Assert.HasCount(60000, train);
        Assert.HasCount(10000, test);
        Assert.IsTrue(Enumerable.Range(0, 10).All(c => train.Count(l => l == c) == 6000), "6,000 training images per class");
        Assert.IsTrue(Enumerable.Range(0, 10).All(c => test.Count(l => l == c) == 1000), "1,000 test images per class");
        Assert.AreEqual(28, testImages.Height);
        Assert.AreEqual(28, testImages.Width);
        // The first two t10k images are an ankle boot and a pullover, as in every Fashion-MNIST loader.
        CollectionAssert.AreEqual(new[] { 9, 2 }, testImages.Labels.ToArray());
    }

    /// <summary>An IDX file written from the format's definition: big-endian magic, big-endian sizes, data.</summary>
    internal static byte[] Idx(int magic, int[] dims, byte[] data)
    {
        var bytes = new byte[4 + 4 * dims.Length + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        for (int d = 0; d < dims.Length; d++)
        {
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * d), dims[d]);
        }

        data.CopyTo(bytes, 4 + 4 * dims.Length);
        return bytes;
    }

    internal static string Write(string path, byte[] content, bool gzip)
    {
        File.WriteAllBytes(path, gzip ? Gzip(content) : content);
        return path;
    }

    private static byte[] Gzip(byte[] content)
    {
        using var buffer = new MemoryStream();
        using (var zip = new GZipStream(buffer, CompressionLevel.Fastest))
        {
            zip.Write(content);
        }

        return buffer.ToArray();
    }
}
