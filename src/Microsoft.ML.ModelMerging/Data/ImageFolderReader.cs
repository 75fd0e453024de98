using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Reads a user's images laid out as one sub-folder per class (<c>root/cat/*.png</c>, <c>root/dog/*.jpg</c>, ...).
/// Classes are the sub-folder names in ordinal order; images are decoded with SkiaSharp, centre-cropped to the
/// target aspect ratio and resized to the target size (the ML.NET <c>ResizeImages</c> default, IsoCrop). Transparent
/// pixels are composited over black, the background of every other data set here.
/// </summary>
public static class ImageFolderReader
{
    /// <summary>File extensions read (case-insensitive): PNG and JPEG.</summary>
    public static readonly IReadOnlyList<string> Extensions = [".png", ".jpg", ".jpeg"];

    /// <summary>Reads every image under <paramref name="root"/>, one sub-folder per class (class names in ordinal order).</summary>
    /// <param name="root">The folder of class folders.</param>
    /// <param name="height">Target height in pixels.</param>
    /// <param name="width">Target width in pixels.</param>
    /// <param name="colorMode">Gray (one channel) or RGB (three).</param>
    /// <param name="name">The data set's name; the folder name when null.</param>
    public static ImageDataset Read(string root, int height, int width, ImageColorMode colorMode = ImageColorMode.Grayscale, string? name = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        var (files, classNames) = ListFiles(root);
        int channels = colorMode == ImageColorMode.Rgb ? 3 : 1;
        int size = channels * height * width;
        var pixels = new float[(long)files.Count * size];
        var labels = new int[files.Count];
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul);
        using var target = new SKBitmap(info);
        using var canvas = new SKCanvas(target);
        for (int i = 0; i < files.Count; i++)
        {
            DrawCropped(files[i].Path, canvas, width, height);
            ToChannels(target.GetPixelSpan(), colorMode, pixels.AsSpan(i * size, size));
            labels[i] = files[i].Label;
        }

        return new ImageDataset(name ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(root)), pixels, labels, classNames, channels, height, width);
    }

    /// <summary>
    /// The image files of <paramref name="root"/> with their labels: classes are the sub-folder names in ordinal order,
    /// files in ordinal order within each class (only those directly in the class folder: see <see cref="NestedImages"/>).
    /// </summary>
    internal static (List<(string Path, int Label)> Files, string[] ClassNames) ListFiles(string root)
    {
        if (!Directory.Exists(root))
        {
            throw new DirectoryNotFoundException($"Image folder '{root}' does not exist.");
        }

        string[] classFolders = ClassFolders(root);
        if (classFolders.Length == 0)
        {
            throw new InvalidDataException($"Image folder '{root}' has no class sub-folders: expected one sub-folder of images per class.");
        }

        var files = new List<(string Path, int Label)>();
        for (int label = 0; label < classFolders.Length; label++)
        {
            string[] images = VisibleFiles(classFolders[label]).Where(IsImageFile).Order(StringComparer.Ordinal).ToArray();
            if (images.Length == 0)
            {
                // Say what the folder does hold: images of another format are the likely reason, and should not look like an empty folder.
                string[] others = VisibleFiles(classFolders[label]).Select(file => Path.GetFileName(file)).Order(StringComparer.Ordinal).ToArray();
                string holds = others.Length == 0 ? "it is empty" : $"it holds {others.Length} other file(s): {string.Join(", ", others.Take(3))}{(others.Length > 3 ? ", ..." : "")}";
                throw new InvalidDataException($"Class folder '{classFolders[label]}' contains no images: expected {string.Join(", ", Extensions)} files ({holds}).");
            }

            files.AddRange(images.Select(file => (file, label)));
        }

        return (files, classFolders.Select(folder => Path.GetFileName(folder)).ToArray());
    }

    /// <summary>
    /// Image files in sub-folders of the class folders of <paramref name="root"/>, which are not read (a class is the images
    /// directly in its folder): counted so that registering a task can say so instead of dropping them silently.
    /// </summary>
    internal static int NestedImages(string root) =>
        !Directory.Exists(root) ? 0 : ClassFolders(root).Sum(folder => SubFolders(folder).Sum(ImagesBelow));

    private static int ImagesBelow(string folder) => VisibleFiles(folder).Count(IsImageFile) + SubFolders(folder).Sum(ImagesBelow);

    // A linked folder is not followed: a link to the folder itself or to one above it (a cycle) would never end the count.
    private static IEnumerable<string> SubFolders(string folder) =>
        Directory.GetDirectories(folder).Where(sub => !IsHidden(sub) && new DirectoryInfo(sub).LinkTarget is null);

    /// <summary>
    /// Files directly in the class folders of <paramref name="root"/> that are not read because their extension is not one
    /// of <see cref="Extensions"/> (WebP, GIF, TIFF, notes, ...): listed so that registering a task can say so.
    /// </summary>
    internal static IReadOnlyList<string> OtherFiles(string root) =>
        !Directory.Exists(root) ? [] : ClassFolders(root).SelectMany(VisibleFiles).Where(file => !IsImageFile(file)).Order(StringComparer.Ordinal).ToList();

    private static string[] ClassFolders(string root) =>
        Directory.GetDirectories(root).Where(folder => !IsHidden(folder)).Order(StringComparer.Ordinal).ToArray();

    // Hidden entries are the file system's or another tool's, not the user's images: macOS writes `._photo.jpg` (AppleDouble
    // metadata, not a JPEG) beside every photo copied to a foreign volume, and `.DS_Store` in every folder.
    private static IEnumerable<string> VisibleFiles(string folder) => Directory.GetFiles(folder).Where(file => !IsHidden(file));

    private static bool IsHidden(string path) => Path.GetFileName(path).StartsWith('.');

    private static bool IsImageFile(string path) => Extensions.Contains(Path.GetExtension(path), StringComparer.OrdinalIgnoreCase);

    private static void DrawCropped(string path, SKCanvas canvas, int width, int height)
    {
        using var image = ReadImage(path);
        // Centre crop to the target aspect ratio, then scale: nothing is stretched.
        float scale = Math.Min((float)image.Width / width, (float)image.Height / height);
        float cropWidth = width * scale, cropHeight = height * scale;
        var source = SKRect.Create((image.Width - cropWidth) / 2, (image.Height - cropHeight) / 2, cropWidth, cropHeight);
        // What SkiaSharp 2.88's FilterQuality.High did: mipmaps when shrinking avoid aliasing, a cubic (Mitchell) filter
        // when enlarging keeps edges smooth, and an unscaled copy is not filtered at all (bilinear at a half-pixel shift).
        var sampling = scale > 1 ? new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Nearest)
            : scale < 1 ? new SKSamplingOptions(SKCubicResampler.Mitchell)
            : source.Left % 1 == 0 && source.Top % 1 == 0 ? new SKSamplingOptions(SKFilterMode.Nearest)
            : new SKSamplingOptions(SKFilterMode.Linear);
        canvas.Clear(SKColors.Black);
        canvas.DrawImage(image, source, SKRect.Create(width, height), sampling);
        canvas.Flush();
    }

    /// <summary>
    /// Decodes <paramref name="path"/> completely and throws naming the file when it is not a whole PNG or JPEG (a
    /// truncated file, text with an image extension): a reader that tolerates partial input, such as ML.NET's
    /// <c>LoadImages</c>, is checked with it first.
    /// </summary>
    /// <exception cref="InvalidDataException">The file cannot be read or decoded completely.</exception>
    internal static void CheckDecodes(string path)
    {
        using var bitmap = Decode(path);
    }

    /// <summary>
    /// Whether <paramref name="path"/> has pixels that are not opaque (read composited over black) and whether it carries an
    /// EXIF orientation (not applied): both readers, and ML.NET's <c>LoadImages</c> that scores later, read the stored pixels
    /// so, while a viewer, or a Python pipeline that flattens or rotates, shows another image.
    /// </summary>
    internal static (bool Transparent, bool Oriented) Traits(string path)
    {
        bool oriented;
        using (var stream = File.OpenRead(path))
        using (var codec = SKCodec.Create(stream))
        {
            if (codec is null) return (false, false);
            oriented = codec.EncodedOrigin != SKEncodedOrigin.TopLeft;
            // Most files without an alpha channel say so in their header; only the others are decoded.
            if (codec.Info.AlphaType == SKAlphaType.Opaque) return (false, oriented);
        }

        using var bitmap = Decode(path);
        ReadOnlySpan<byte> rgba = bitmap.GetPixelSpan();
        for (int i = 3; i < rgba.Length; i += 4)
            if (rgba[i] != 255) return (true, oriented);
        return (false, oriented);
    }

    private static SKImage ReadImage(string path)
    {
        using var bitmap = Decode(path);
        return SKImage.FromPixelCopy(bitmap.Info, bitmap.GetPixels(), bitmap.RowBytes);
    }

    private static SKBitmap Decode(string path)
    {
        try
        {
            // SKCodec reports truncated or corrupt data (IncompleteInput, InvalidInput) that a plain decode would
            // hide behind a partly black image.
            using var stream = File.OpenRead(path);
            using var codec = SKCodec.Create(stream, out SKCodecResult result)
                ?? throw new InvalidDataException(new FileInfo(path).Length == 0 ? $"Image '{path}' is an empty file (0 bytes)."
                    // SkiaSharp says "Unimplemented" for content in no format it knows (a text file named .jpg).
                    : result == SKCodecResult.Unimplemented ? $"Image '{path}' is not a PNG or JPEG: its content is in no image format SkiaSharp reads."
                    : $"Image '{path}' is not a readable PNG or JPEG ({result}).");
            var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Premul);
            var bitmap = new SKBitmap(info);
            result = codec.GetPixels(info, bitmap.GetPixels());
            if (result != SKCodecResult.Success)
            {
                bitmap.Dispose();
                throw new InvalidDataException($"Image '{path}' could not be decoded ({result}).");
            }

            return bitmap;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"Image '{path}' could not be read: {e.Message}", e);
        }
    }

    private static void ToChannels(ReadOnlySpan<byte> rgba, ImageColorMode colorMode, Span<float> destination)
    {
        int count = rgba.Length / 4;
        if (colorMode == ImageColorMode.Rgb)
        {
            for (int p = 0; p < count; p++)
            {
                destination[p] = rgba[4 * p] / 255f;
                destination[count + p] = rgba[4 * p + 1] / 255f;
                destination[2 * count + p] = rgba[4 * p + 2] / 255f;
            }

            return;
        }

        for (int p = 0; p < count; p++)
        {
            float luma = 0.299f * rgba[4 * p] + 0.587f * rgba[4 * p + 1] + 0.114f * rgba[4 * p + 2];
            destination[p] = Math.Min(luma / 255f, 1f);
        }
    }
}
