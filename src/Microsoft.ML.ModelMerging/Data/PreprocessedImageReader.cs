using Microsoft.ML;
using Microsoft.ML.Data;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Reads images as <see cref="ImagePreprocessing"/> says, through the very ML.NET transforms a user's scoring pipeline
/// has (<c>LoadImages</c> → <c>ResizeImages</c> IsoCrop → <c>ExtractPixels</c>), so the pixels the merged model is
/// adapted and evaluated on are the pixels it is later scored on, bit for bit. Values are divided by 255 into [0, 1];
/// mean/std are the model's (applied in its forward and in its ONNX graph).
/// </summary>
public static class PreprocessedImageReader
{
    private sealed class ImagePath
    {
        public string Path { get; set; } = "";
    }

    /// <summary>An image folder (one sub-folder per class, PNG or JPEG of any size) as RGB [N, 3, crop, crop].</summary>
    /// <param name="root">The folder of class folders.</param>
    /// <param name="preprocessing">How each image is resized and cropped.</param>
    /// <param name="name">The data set's name; the folder name when null.</param>
    /// <param name="checkFiles">
    /// Decode every file whole first, so a truncated or non-image file is refused by its path (<see cref="ReadFiles"/>);
    /// a pool's later reads can skip it, since the split fingerprints recorded at registration catch any change.
    /// </param>
    public static ImageDataset ReadFolder(string root, ImagePreprocessing preprocessing, string? name = null, bool checkFiles = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        ArgumentNullException.ThrowIfNull(preprocessing);
        var (files, classNames) = ImageFolderReader.ListFiles(root);
        float[] pixels = ReadFiles(files.Select(f => f.Path).ToList(), preprocessing, checkFiles);
        int size = preprocessing.CropSize;
        return new ImageDataset(name ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(root)), pixels,
            files.Select(f => f.Label).ToArray(), classNames, channels: 3, size, size);
    }

    /// <summary>The pixels of <paramref name="paths"/>, image after image, each [3, crop, crop] in [0, 1].</summary>
    /// <param name="paths">The image files.</param>
    /// <param name="preprocessing">How each image is resized and cropped.</param>
    /// <param name="checkFiles">Decode every file whole first (default), so a broken file is refused by its path.</param>
    public static float[] ReadFiles(IReadOnlyList<string> paths, ImagePreprocessing preprocessing, bool checkFiles = true)
    {
        preprocessing.Validate("image preprocessing");
        int size = preprocessing.CropSize, perImage = 3 * size * size;
        // LoadImages decodes a truncated PNG or JPEG without complaint (the missing part comes out black), and a file it
        // cannot decode surfaces from a read-ahead cursor at another row: every file is decoded once by itself first.
        if (checkFiles)
            foreach (string path in paths) ImageFolderReader.CheckDecodes(path);
        var ml = new MLContext(seed: 0);
        var data = ml.Data.LoadFromEnumerable(paths.Select(p => new ImagePath { Path = Path.GetFullPath(p) }));
        var pipeline = ml.Transforms.LoadImages("image", imageFolder: "", nameof(ImagePath.Path))
            .Append(ml.Transforms.ResizeImages("image", size, size, "image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"));
        var transformed = pipeline.Fit(data).Transform(data);
        var column = transformed.Schema["pixels"];
        var pixels = new float[(long)paths.Count * perImage];
        using var cursor = transformed.GetRowCursor([column]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        var row = default(VBuffer<float>);
        for (int i = 0; i < paths.Count; i++)
        {
            try
            {
                if (!cursor.MoveNext()) throw new InvalidOperationException("fewer rows than files");
                getter(ref row);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Files not checked up front (read again after registration): find the one that does not decode, by name.
                if (!checkFiles)
                    foreach (string path in paths) ImageFolderReader.CheckDecodes(path);
                throw new InvalidDataException($"ML.NET could not read the images of '{Path.GetDirectoryName(paths[i])}' (stopped at row {i + 1} of {paths.Count}; its cursor reads ahead, so the file may be a later one): {e.Message}", e);
            }

            if (row.Length != perImage)
                throw new InvalidDataException($"Image '{paths[i]}' gave {row.Length} values, expected {perImage} (3×{size}×{size}).");
            var destination = pixels.AsSpan(i * perImage, perImage);
            int j = 0;
            foreach (float value in row.DenseValues()) destination[j++] = value / 255f;
        }

        return pixels;
    }
}
