using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Labelled images held as one contiguous float32 array in [N, C, H, W] order with values in [0, 1], so the whole
/// set becomes a tensor in one call. Immutable: every operation returns a new data set.
/// </summary>
public sealed class ImageDataset
{
    private readonly float[] pixels;
    private readonly int[] labels;
    private string? fingerprint;

    /// <param name="name">What the data set is, for reports and error messages.</param>
    /// <param name="pixels">N·C·H·W values in [0, 1], image after image, each channel-major (C, then H, then W). Taken, not copied.</param>
    /// <param name="labels">N class indices in [0, classNames.Count). Taken, not copied.</param>
    /// <param name="classNames">Distinct, non-empty class names; index = label.</param>
    /// <param name="channels">C: 1 for grayscale, 3 for RGB.</param>
    /// <param name="height">H in pixels.</param>
    /// <param name="width">W in pixels.</param>
    public ImageDataset(string name, float[] pixels, int[] labels, IReadOnlyList<string> classNames, int channels, int height, int width)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(classNames);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        if (classNames.Count == 0)
        {
            throw new ArgumentException($"Data set '{name}' needs at least one class name.", nameof(classNames));
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string className in classNames)
        {
            if (string.IsNullOrWhiteSpace(className) || !seen.Add(className))
            {
                throw new ArgumentException($"Data set '{name}': class names must be distinct and non-empty ('{className}').", nameof(classNames));
            }
        }

        long pixelsPerImage = (long)channels * height * width;
        if (pixels.LongLength != labels.LongLength * pixelsPerImage)
        {
            throw new ArgumentException(
                $"Data set '{name}': {labels.Length} labels need {labels.LongLength * pixelsPerImage} pixel values " +
                $"({channels}×{height}×{width} each), got {pixels.LongLength}.", nameof(pixels));
        }

        int badLabel = labels.AsSpan().IndexOfAnyExceptInRange(0, classNames.Count - 1);
        if (badLabel >= 0)
        {
            throw new ArgumentException($"Data set '{name}': label {labels[badLabel]} of image {badLabel} is outside [0, {classNames.Count - 1}].", nameof(labels));
        }

        int badPixel = pixels.AsSpan().IndexOfAnyExceptInRange(0f, 1f);
        if (badPixel >= 0)
        {
            throw new ArgumentException($"Data set '{name}': pixel value {pixels[badPixel]} of image {badPixel / pixelsPerImage} is outside [0, 1].", nameof(pixels));
        }

        Name = name;
        this.pixels = pixels;
        this.labels = labels;
        ClassNames = classNames.ToArray();
        Channels = channels;
        Height = height;
        Width = width;
    }

    /// <summary>What the data set is, for reports and error messages.</summary>
    public string Name { get; }

    /// <summary>Class names; the index is the label.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Number of classes.</summary>
    public int ClassCount => ClassNames.Count;

    /// <summary>Number of images (N).</summary>
    public int Count => labels.Length;

    /// <summary>C: 1 for grayscale, 3 for RGB.</summary>
    public int Channels { get; }

    /// <summary>H in pixels.</summary>
    public int Height { get; }

    /// <summary>W in pixels.</summary>
    public int Width { get; }

    /// <summary>Values per image, C·H·W.</summary>
    public int PixelsPerImage => Channels * Height * Width;

    /// <summary>All pixels, [N, C, H, W] row-major.</summary>
    public ReadOnlyMemory<float> Pixels => pixels;

    /// <summary>The class index of every image.</summary>
    public ReadOnlyMemory<int> Labels => labels;

    /// <summary>The tensor shape of <see cref="Pixels"/>: [N, C, H, W].</summary>
    public long[] Shape => [Count, Channels, Height, Width];

    /// <summary>The pixels of one image, [C, H, W] row-major.</summary>
    public ReadOnlySpan<float> Image(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return pixels.AsSpan(index * PixelsPerImage, PixelsPerImage);
    }

    /// <summary>
    /// Lower-case hex SHA-256 of the pixel bytes (float32 little-endian) followed by the label bytes (int32
    /// little-endian): two data sets with the same fingerprint hold the same images with the same labels in the same order.
    /// </summary>
    public string Fingerprint => fingerprint ??= ComputeFingerprint();

    /// <summary>How many images each class has, indexed by label.</summary>
    public int[] CountPerClass()
    {
        var counts = new int[ClassCount];
        foreach (int label in labels)
        {
            counts[label]++;
        }

        return counts;
    }

    /// <summary>The images at <paramref name="indices"/>, in that order (repeats allowed).</summary>
    public ImageDataset Select(IReadOnlyList<int> indices, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(indices);
        int size = PixelsPerImage;
        var selectedPixels = new float[(long)indices.Count * size];
        var selectedLabels = new int[indices.Count];
        for (int i = 0; i < indices.Count; i++)
        {
            int source = indices[i];
            if ((uint)source >= (uint)Count)
            {
                throw new ArgumentOutOfRangeException(nameof(indices), $"Index {source} is outside data set '{Name}' of {Count} images.");
            }

            pixels.AsSpan(source * size, size).CopyTo(selectedPixels.AsSpan(i * size, size));
            selectedLabels[i] = labels[source];
        }

        return new ImageDataset(name ?? Name, selectedPixels, selectedLabels, ClassNames, Channels, Height, Width);
    }

    /// <summary>The same images under another name (the pixel array is shared, it is never written).</summary>
    public ImageDataset WithName(string name) => new(name, pixels, labels, ClassNames, Channels, Height, Width);

    /// <summary>A float32 tensor [N, C, H, W] holding a copy of the pixels.</summary>
    public torch.Tensor ToTensor(torch.Device? device = null) =>
        torch.tensor(pixels, Shape, dtype: torch.ScalarType.Float32, device: device);

    /// <summary>An int64 tensor [N] of the labels, as cross-entropy expects.</summary>
    public torch.Tensor LabelsToTensor(torch.Device? device = null) =>
        torch.tensor(Array.ConvertAll(labels, l => (long)l), [Count], dtype: torch.ScalarType.Int64, device: device);

    /// <summary>Name, size, shape and class count, for logs.</summary>
    public override string ToString() => $"{Name}: {Count} images {Channels}×{Height}×{Width}, {ClassCount} classes";

    private string ComputeFingerprint()
    {
        // The byte layout is only well defined on little-endian machines, which is every platform .NET ships for.
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("Data set fingerprints are defined on little-endian byte order.");
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(MemoryMarshal.AsBytes(pixels.AsSpan()));
        hash.AppendData(MemoryMarshal.AsBytes(labels.AsSpan()));
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
