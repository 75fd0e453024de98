using Microsoft.ML.ModelMerging.Data;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class ImageFolderReaderTests
{
    private static readonly SKColor Red = new(200, 30, 10);
    private static readonly SKColor Blue = new(20, 40, 220);

    [TestMethod]
    public void ClassesAreSortedSubFoldersAndGrayscaleIsLuma()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("b-blue/1.png"), 10, 10, Blue, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("a-red/2.png"), 6, 6, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("a-red/1.png"), 3, 3, Red, SKEncodedImageFormat.Png);
        File.WriteAllText(dir.File("a-red/notes.txt"), "not an image");

        ImageDataset data = ImageFolderReader.Read(dir.Path, 4, 5);

        CollectionAssert.AreEqual(new[] { "a-red", "b-blue" }, data.ClassNames.ToArray());
        CollectionAssert.AreEqual(new[] { 0, 0, 1 }, data.Labels.ToArray());
        Assert.AreEqual(1, data.Channels);
        Assert.AreEqual(4, data.Height);
        Assert.AreEqual(5, data.Width);
        // A solid image stays solid through any resize: every pixel is the BT.601 luma of its colour.
        AssertAll(data.Image(0), Luma(Red), 1.5f / 255);
        AssertAll(data.Image(1), Luma(Red), 1.5f / 255);
        AssertAll(data.Image(2), Luma(Blue), 1.5f / 255);
    }

    [TestMethod]
    public void ImagesInSubFoldersOfAClassAreCountedNotRead()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("red/1.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("red/2019/summer/2.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("red/.ipynb_checkpoints/3.png"), 4, 4, Blue, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("blue/1.png"), 4, 4, Blue, SKEncodedImageFormat.Png);

        var (files, classes) = ImageFolderReader.ListFiles(dir.Path);

        CollectionAssert.AreEqual(new[] { "blue", "red" }, classes);
        CollectionAssert.AreEqual(new[] { (dir.File("blue/1.png"), 0), (dir.File("red/1.png"), 1) }, files.ToArray());
        Assert.AreEqual(1, ImageFolderReader.NestedImages(dir.Path), "the nested image, not the hidden folder's");
    }

    /// <summary>A link inside a class folder back to the image folder (a cycle) is not followed when nested images are counted.</summary>
    [TestMethod]
    public void ALinkBackUpIsNotFollowed()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("red/1.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("red/2019/2.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("blue/1.png"), 4, 4, Blue, SKEncodedImageFormat.Png);
        Directory.CreateSymbolicLink(dir.File("red/2019/all"), dir.Path);

        Assert.AreEqual(1, ImageFolderReader.NestedImages(dir.Path));
        Assert.HasCount(2, ImageFolderReader.ListFiles(dir.Path).Files);
    }

    /// <summary>
    /// macOS leaves <c>._name.jpg</c> (AppleDouble metadata, not a JPEG) beside each photo copied to another volume, and
    /// <c>.DS_Store</c> in each folder: hidden files are no images of the class, in either reader.
    /// </summary>
    [TestMethod]
    public void HiddenFilesAreNotRead()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("red/1.jpg"), 6, 6, Red, SKEncodedImageFormat.Jpeg);
        WriteSolid(dir.File("blue/1.png"), 6, 6, Blue, SKEncodedImageFormat.Png);
        File.WriteAllBytes(dir.File("red/._1.jpg"), [0, 5, 22, 7, 0, 2, 0, 0, .. "Mac OS X        "u8]);
        File.WriteAllText(dir.File("red/.DS_Store"), "Bud1");

        ImageDataset data = ImageFolderReader.Read(dir.Path, 4, 4, ImageColorMode.Rgb);
        ImageDataset preprocessed = PreprocessedImageReader.ReadFolder(dir.Path, ImagePreprocessing.Square(4));

        CollectionAssert.AreEqual(new[] { 0, 1 }, data.Labels.ToArray());
        CollectionAssert.AreEqual(new[] { 0, 1 }, preprocessed.Labels.ToArray());
        AssertAll(preprocessed.Image(1)[..16], Red.Red / 255f, 6f / 255);
        Assert.IsEmpty(ImageFolderReader.OtherFiles(dir.Path));
    }

    /// <summary>Files of the class folders that are not PNG or JPEG are listed, so that registering a task can say what it left out.</summary>
    [TestMethod]
    public void FilesOfOtherFormatsAreListed()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("red/1.png"), 6, 6, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("red/2.webp"), 6, 6, Red, SKEncodedImageFormat.Webp);
        WriteSolid(dir.File("blue/1.PNG"), 6, 6, Blue, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("blue/2.webp"), 6, 6, Blue, SKEncodedImageFormat.Webp);
        File.WriteAllText(dir.File("blue/notes.txt"), "taken in 2019");

        var notes = Microsoft.ML.ModelMerging.Pools.ImageFolderTask.Notes(dir.Path);

        CollectionAssert.AreEqual(new[] { dir.File("blue/2.webp"), dir.File("blue/notes.txt"), dir.File("red/2.webp") }, ImageFolderReader.OtherFiles(dir.Path).ToArray());
        Assert.HasCount(1, notes);
        StringAssert.Contains(notes[0], "3 file(s) in the class folders of " + dir.Path + " are not read: only PNG and JPEG are (.webp ×2, .txt ×1;");
    }

    /// <summary>
    /// Transparent pixels are read composited over black and an EXIF orientation is not applied, by both readers as by
    /// ML.NET's LoadImages; registering a task says so for the images it concerns (an RGBA file whose pixels are all opaque
    /// is not one of them).
    /// </summary>
    [TestMethod]
    public void TransparentAndRotatedImagesAreReadAsStoredAndNoted()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("red/opaque.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        using (var rgba = new SKBitmap(new SKImageInfo(4, 4, SKColorType.Rgba8888, SKAlphaType.Unpremul)))
        {
            rgba.Erase(Blue);
            Encode(rgba, dir.File("blue/opaque-rgba.png"), SKEncodedImageFormat.Png);
            rgba.Erase(Blue.WithAlpha(102));
            Encode(rgba, dir.File("blue/translucent.png"), SKEncodedImageFormat.Png);
        }

        // A 2×1 JPEG (red, then blue) whose EXIF orientation 6 asks a viewer to turn it a quarter clockwise.
        string rotated = dir.File("red/rotated.jpg");
        using (var wide = new SKBitmap(16, 8))
        {
            for (int x = 0; x < 16; x++)
                for (int y = 0; y < 8; y++)
                    wide.SetPixel(x, y, x < 8 ? Red : Blue);
            Encode(wide, rotated, SKEncodedImageFormat.Jpeg);
        }

        byte[] jpeg = File.ReadAllBytes(rotated);
        byte[] tiff = [(byte)'M', (byte)'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0];
        byte[] app1 = [0xFF, 0xE1, 0, (byte)(2 + 6 + tiff.Length), .. "Exif\0\0"u8, .. tiff];
        File.WriteAllBytes(rotated, [.. jpeg[..2], .. app1, .. jpeg[2..]]);

        var notes = Microsoft.ML.ModelMerging.Pools.ImageFolderTask.Notes(dir.Path);
        ImageDataset skia = ImageFolderReader.Read(dir.Path, 8, 8, ImageColorMode.Rgb);
        ImageDataset mlnet = PreprocessedImageReader.ReadFolder(dir.Path, ImagePreprocessing.Square(8));

        Assert.HasCount(2, notes);
        StringAssert.Contains(notes[0], $"1 image(s) of {dir.Path} have transparent pixels (e.g. {dir.File("blue/translucent.png")}): they are read composited over black");
        StringAssert.Contains(notes[1], $"1 image(s) of {dir.Path} carry an EXIF orientation (e.g. {rotated}): it is not applied");
        foreach (var data in new[] { skia, mlnet })
        {
            // Files in ordinal order: blue/opaque-rgba, blue/translucent, red/opaque, red/rotated. 40% of the blue over black.
            AssertAll(data.Image(1)[128..], Blue.Blue * 0.4f / 255, 2f / 255);
            // Stored, not turned: red on the left, blue on the right.
            Assert.AreEqual(Red.Red / 255f, data.Image(3)[8], 12f / 255, "left");
            Assert.AreEqual(Blue.Red / 255f, data.Image(3)[15], 12f / 255, "right");
        }
    }

    [TestMethod]
    public void RgbKeepsChannelsSeparateAndReadsJpeg()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("only/x.jpg"), 16, 16, Red, SKEncodedImageFormat.Jpeg);

        ImageDataset data = ImageFolderReader.Read(dir.Path, 8, 8, ImageColorMode.Rgb);

        Assert.AreEqual(3, data.Channels);
        ReadOnlySpan<float> image = data.Image(0);
        // JPEG is lossy: a few levels of error on a flat colour.
        AssertAll(image[..64], Red.Red / 255f, 6f / 255);
        AssertAll(image[64..128], Red.Green / 255f, 6f / 255);
        AssertAll(image[128..], Red.Blue / 255f, 6f / 255);
    }

    [TestMethod]
    public void WideImagesAreCentreCroppedNotStretched()
    {
        using var dir = new TempDirectory();
        // 12×4: red on the left third, blue in the middle third, red on the right third. The centre 4×4 crop is all blue.
        using (var bitmap = new SKBitmap(12, 4))
        {
            for (int x = 0; x < 12; x++)
            {
                for (int y = 0; y < 4; y++)
                {
                    bitmap.SetPixel(x, y, x is >= 4 and < 8 ? Blue : Red);
                }
            }

            Encode(bitmap, dir.File("c/wide.png"), SKEncodedImageFormat.Png);
        }

        ImageDataset data = ImageFolderReader.Read(dir.Path, 2, 2, ImageColorMode.Rgb);

        AssertAll(data.Image(0)[8..], Blue.Blue / 255f, 1.5f / 255);
    }

    [TestMethod]
    public void EmptyClassFolderIsAnErrorNamingIt()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("full/1.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        Directory.CreateDirectory(Path.Combine(dir.Path, "empty"));

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(dir.Path, 4, 4));

        Assert.Contains(Path.Combine(dir.Path, "empty"), error.Message);
        StringAssert.EndsWith(error.Message, "(it is empty).");
    }

    /// <summary>A class folder of WebP files only is not called empty: the error says what it holds.</summary>
    [TestMethod]
    public void AClassFolderOfOtherFormatsSaysWhatItHolds()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("full/1.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        WriteSolid(dir.File("webp/1.webp"), 4, 4, Blue, SKEncodedImageFormat.Webp);
        WriteSolid(dir.File("webp/2.webp"), 4, 4, Blue, SKEncodedImageFormat.Webp);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(dir.Path, 4, 4));

        Assert.AreEqual($"Class folder '{dir.File("webp")}' contains no images: expected .png, .jpg, .jpeg files (it holds 2 other file(s): 1.webp, 2.webp).", error.Message);
    }

    [TestMethod]
    public void CorruptImageIsAnErrorNamingIt()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("k/good.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        string corrupt = dir.File("k/bad.png");
        File.WriteAllBytes(corrupt, [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3, 4, 5]);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(dir.Path, 4, 4));

        Assert.Contains(corrupt, error.Message);
    }

    /// <summary>An empty file and a text file named .jpg are told apart from a corrupt image, each by its path.</summary>
    [TestMethod]
    public void EmptyAndTextFilesAreNamedForWhatTheyAre()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("k/good.png"), 4, 4, Red, SKEncodedImageFormat.Png);
        string empty = dir.File("k/empty.png");
        File.WriteAllBytes(empty, []);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(dir.Path, 4, 4));

        Assert.AreEqual($"Image '{empty}' is an empty file (0 bytes).", error.Message);
        File.Delete(empty);
        string text = dir.File("k/caption.jpg");
        File.WriteAllText(text, "a red square");

        error = Assert.ThrowsExactly<InvalidDataException>(() => PreprocessedImageReader.ReadFolder(dir.Path, ImagePreprocessing.Square(4)));

        Assert.AreEqual($"Image '{text}' is not a PNG or JPEG: its content is in no image format SkiaSharp reads.", error.Message);
    }

    [TestMethod]
    public void TruncatedImageIsAnErrorNamingIt()
    {
        using var dir = new TempDirectory();
        string whole = dir.File("source/whole.png");
        using (var bitmap = new SKBitmap(64, 64))
        {
            // Noise, so the compressed data is long enough to cut in the middle of the pixels.
            var random = new Random(1);
            for (int y = 0; y < 64; y++)
            {
                for (int x = 0; x < 64; x++)
                {
                    bitmap.SetPixel(x, y, new SKColor((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)));
                }
            }

            Encode(bitmap, whole, SKEncodedImageFormat.Png);
        }

        byte[] png = File.ReadAllBytes(whole);
        string truncated = dir.File("images/k/cut.png");
        File.WriteAllBytes(truncated, png[..(png.Length / 2)]);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(Path.Combine(dir.Path, "images"), 4, 4));

        Assert.Contains(truncated, error.Message);
    }

    [TestMethod]
    public void FolderWithoutClassFoldersIsAnError()
    {
        using var dir = new TempDirectory();
        WriteSolid(dir.File("loose.png"), 4, 4, Red, SKEncodedImageFormat.Png);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => ImageFolderReader.Read(dir.Path, 4, 4));

        Assert.Contains(dir.Path, error.Message);
        Assert.ThrowsExactly<DirectoryNotFoundException>(() => ImageFolderReader.Read(Path.Combine(dir.Path, "absent"), 4, 4));
    }

    private static float Luma(SKColor color) => (0.299f * color.Red + 0.587f * color.Green + 0.114f * color.Blue) / 255f;

    private static void AssertAll(ReadOnlySpan<float> values, float expected, float tolerance)
    {
        for (int i = 0; i < values.Length; i++)
        {
            Assert.AreEqual(expected, values[i], tolerance, $"value {i}");
        }
    }

    private static void WriteSolid(string path, int width, int height, SKColor color, SKEncodedImageFormat format)
    {
        using var bitmap = new SKBitmap(width, height);
        bitmap.Erase(color);
        Encode(bitmap, path, format);
    }

    private static void Encode(SKBitmap bitmap, string path, SKEncodedImageFormat format)
    {
        using var stream = File.Create(path);
        Assert.IsTrue(bitmap.Encode(stream, format, 95), $"encoding {path}");
    }
}
