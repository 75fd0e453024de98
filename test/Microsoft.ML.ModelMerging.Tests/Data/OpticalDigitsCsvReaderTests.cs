using System.IO.Compression;
using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class OpticalDigitsCsvReaderTests
{
    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void ConstantGridFillsTheCentredBox(bool gzip)
    {
        using var dir = new TempDirectory();
        string file = Write(dir.File("digits.csv"), [Row(Enumerable.Repeat(8, 64), 3), Row(Enumerable.Repeat(16, 64), 9)], gzip);

        ImageDataset data = OpticalDigitsCsvReader.Read(file);

        Assert.AreEqual(2, data.Count);
        CollectionAssert.AreEqual(new[] { 3, 9 }, data.Labels.ToArray());
        for (int y = 0; y < 28; y++)
        {
            for (int x = 0; x < 28; x++)
            {
                bool inBox = y is >= 4 and < 24 && x is >= 4 and < 24;
                Assert.AreEqual(inBox ? 0.5f : 0f, data.Image(0)[y * 28 + x], 1e-6f, $"pixel ({y}, {x})");
                Assert.AreEqual(inBox ? 1f : 0f, data.Image(1)[y * 28 + x], 1e-6f, $"pixel ({y}, {x})");
            }
        }
    }

    [TestMethod]
    public void HorizontalRampIsInterpolatedLinearly()
    {
        using var dir = new TempDirectory();
        // Column c holds 2c (0..14): the upsampled value at box column x is 2·clamp((x + 0.5)·8/20 − 0.5, 0, 7) / 16.
        string file = Write(dir.File("digits.csv"), [Row(Enumerable.Range(0, 64).Select(i => 2 * (i % 8)), 0)], gzip: false);

        ImageDataset data = OpticalDigitsCsvReader.Read(file);

        for (int x = 0; x < 20; x++)
        {
            double source = Math.Clamp((x + 0.5) * 8 / 20 - 0.5, 0, 7);
            Assert.AreEqual((float)(2 * source / 16), data.Image(0)[10 * 28 + 4 + x], 1e-6f, $"box column {x}");
        }
    }

    [TestMethod]
    [DataRow("1,2,3", "3 columns")]
    [DataRow("17", "outside 0..16")]
    [DataRow("x", "not an integer")]
    public void MalformedRowsNameFileAndLine(string badRow, string expected)
    {
        using var dir = new TempDirectory();
        string row = badRow.Contains(',') ? badRow : string.Join(",", Enumerable.Repeat(badRow, 64)) + ",1";
        string file = Write(dir.File("digits.csv"), [Row(Enumerable.Repeat(0, 64), 1), row], gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => OpticalDigitsCsvReader.Read(file));

        Assert.Contains(file, error.Message);
        Assert.Contains("line 2", error.Message);
        Assert.Contains(expected, error.Message);
    }

    [TestMethod]
    public void LabelBeyondNineIsAnError()
    {
        using var dir = new TempDirectory();
        string file = Write(dir.File("digits.csv"), [Row(Enumerable.Repeat(0, 64), 10)], gzip: false);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => OpticalDigitsCsvReader.Read(file));

        Assert.Contains("column 65", error.Message);
    }

    [TestMethod]
    public void RealFileHas1797Digits()
    {
        RealData.Require(RealData.Sources.OpticalDigitsFile, "digits.csv.gz");

        ImageDataset data = OpticalDigitsCsvReader.Read(RealData.Sources.OpticalDigitsFile);

        Assert.AreEqual(1797, data.Count);
        CollectionAssert.AreEqual(new[] { 178, 182, 177, 183, 181, 182, 181, 179, 174, 180 }, data.CountPerClass());
        Assert.AreEqual(0, data.Labels.Span[0]);
        // The first row starts 0,0,5,13,...: grid pixel (0, 3) is 13/16 and lands near box column 3·20/8 + 1 = 8.5.
        Assert.IsGreaterThan(0.5f, data.Image(0)[4 * 28 + 4 + 8]);
        Assert.AreEqual(0f, data.Image(0)[0]);
    }

    private static string Row(IEnumerable<int> pixels, int label) => string.Join(",", pixels.Append(label));

    private static string Write(string path, string[] rows, bool gzip)
    {
        string text = string.Join("\n", rows) + "\n";
        if (!gzip)
        {
            File.WriteAllText(path, text);
            return path;
        }

        using (var zip = new GZipStream(File.Create(path), CompressionLevel.Fastest))
        using (var writer = new StreamWriter(zip))
        {
            writer.Write(text);
        }

        return path;
    }
}
