namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Turns a gray data set of real images (MNIST, Fashion-MNIST) into an RGB one of the benchmark's size: each image is
/// redrawn by a style callback from its own seeded stream; labels and class names are kept.
/// </summary>
internal static class ImageStyler
{
    public static ImageDataset Restyle(ImageDataset gray, int seed, string name, Action<RgbRaster, float[], SeededRandom> style)
    {
        if (gray.Channels != 1) throw new ArgumentException($"'{gray.Name}' has {gray.Channels} channels; the styler takes gray images.");
        int size = ProceduralImages.Size, pixels = 3 * size * size;
        var data = new float[(long)gray.Count * pixels];
        using var raster = new RgbRaster(size);
        for (int i = 0; i < gray.Count; i++)
        {
            var random = new SeededRandom(seed, stream: (ulong)i * 2 + 1);
            Array.Clear(raster.Pixels);
            style(raster, gray.Image(i).ToArray(), random);
            raster.CopyTo(data.AsSpan(i * pixels, pixels));
        }

        return new ImageDataset(name, data, gray.Labels.ToArray(), gray.ClassNames, 3, size, size);
    }

    /// <summary>Paints a gray image (white = ink) of side ≤ the raster's at an offset in colour <paramref name="ink"/>.</summary>
    public static void Stamp(RgbRaster raster, float[] image, int dx, int dy, Rgb ink, float opacity)
    {
        int side = (int)MathF.Sqrt(image.Length);
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
                raster.Blend(x + dx, y + dy, ink, opacity * image[y * side + x]);
    }
}
