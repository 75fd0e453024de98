using System.Buffers.Binary;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Reads the IDX format of MNIST and Fashion-MNIST (plain or gzip): a big-endian magic number
/// (0x0801 for an unsigned-byte vector of labels, 0x0803 for an unsigned-byte [count, rows, columns] array of
/// images), the big-endian dimension sizes, then exactly that many bytes.
/// </summary>
public static class IdxReader
{
    /// <summary>Magic number of a label file: unsigned bytes, one dimension.</summary>
    public const int LabelMagic = 0x00000801;
    /// <summary>Magic number of an image file: unsigned bytes, three dimensions.</summary>
    public const int ImageMagic = 0x00000803;

    /// <summary>The labels of an IDX label file.</summary>
    public static int[] ReadLabels(string path) => DataFile.Parse(path, stream =>
    {
        int[] dims = ReadHeader(stream, path, LabelMagic, "labels (unsigned bytes, 1 dimension)");
        byte[] bytes = ReadPayload(stream, path, dims[0]);
        return Array.ConvertAll(bytes, b => (int)b);
    });

    /// <summary>
    /// Reads an IDX image file and its label file into a grayscale data set with pixels scaled from 0..255 to [0, 1].
    /// </summary>
    /// <param name="imagesPath">The IDX image file (magic 0x0803).</param>
    /// <param name="labelsPath">The IDX label file (magic 0x0801) with one label per image.</param>
    /// <param name="classNames">Class names; every label must index one.</param>
    /// <param name="name">Name of the data set; the image file's name when null.</param>
    /// <param name="indices">Which images to keep, in that order; all when null. Lets a task take a few thousand
    /// images of a 60,000-image file without holding all of them as floats.</param>
    public static ImageDataset Read(
        string imagesPath, string labelsPath, IReadOnlyList<string> classNames, string? name = null, IReadOnlyList<int>? indices = null)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        int[] allLabels = ReadLabels(labelsPath);
        int badLabel = allLabels.AsSpan().IndexOfAnyExceptInRange(0, classNames.Count - 1);
        if (badLabel >= 0)
        {
            throw new InvalidDataException(
                $"'{labelsPath}': label {allLabels[badLabel]} at position {badLabel} is outside the {classNames.Count} classes [0, {classNames.Count - 1}].");
        }

        return DataFile.Parse(imagesPath, stream =>
        {
            int[] dims = ReadHeader(stream, imagesPath, ImageMagic, "images (unsigned bytes, 3 dimensions)");
            int count = dims[0], rows = dims[1], columns = dims[2];
            if (count != allLabels.Length)
            {
                throw new InvalidDataException(
                    $"'{imagesPath}' holds {count} images but '{labelsPath}' holds {allLabels.Length} labels: expected the same count.");
            }

            int size = checked(rows * columns);
            byte[] bytes = ReadPayload(stream, imagesPath, checked((long)count * size));
            IReadOnlyList<int> selected = indices ?? Enumerable.Range(0, count).ToArray();
            var pixels = new float[(long)selected.Count * size];
            var labels = new int[selected.Count];
            for (int i = 0; i < selected.Count; i++)
            {
                int source = selected[i];
                if ((uint)source >= (uint)count)
                {
                    throw new ArgumentOutOfRangeException(nameof(indices), $"Index {source} is outside the {count} images of '{imagesPath}'.");
                }

                PixelBytes.ToUnitRange(bytes.AsSpan(source * size, size), pixels.AsSpan(i * size, size));
                labels[i] = allLabels[source];
            }

            return new ImageDataset(name ?? Path.GetFileName(imagesPath), pixels, labels, classNames, 1, rows, columns);
        });
    }

    private static int[] ReadHeader(Stream stream, string path, int expectedMagic, string expectedKind)
    {
        Span<byte> word = stackalloc byte[4];
        if (stream.ReadAtLeast(word, 4, throwOnEndOfStream: false) < 4)
        {
            throw new InvalidDataException($"'{path}' is truncated: it ends before the 4-byte IDX magic number.");
        }

        int magic = BinaryPrimitives.ReadInt32BigEndian(word);
        if (magic != expectedMagic)
        {
            throw new InvalidDataException(
                $"'{path}' is not an IDX file of {expectedKind}: magic number 0x{magic:X8}, expected 0x{expectedMagic:X8}.");
        }

        var dims = new int[magic & 0xFF];
        for (int d = 0; d < dims.Length; d++)
        {
            if (stream.ReadAtLeast(word, 4, throwOnEndOfStream: false) < 4)
            {
                throw new InvalidDataException($"'{path}' is truncated: it ends inside the header ({dims.Length} dimension sizes expected).");
            }

            dims[d] = BinaryPrimitives.ReadInt32BigEndian(word);
            if (dims[d] < 0 || (d > 0 && dims[d] == 0))
            {
                throw new InvalidDataException($"'{path}' declares an invalid size {dims[d]} for dimension {d}.");
            }
        }

        return dims;
    }

    private static byte[] ReadPayload(Stream stream, string path, long length)
    {
        if (length > Array.MaxLength)
        {
            throw new InvalidDataException($"'{path}' declares {length} bytes of data, more than one array can hold.");
        }

        var bytes = new byte[length];
        int read = stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        if (read < bytes.Length)
        {
            throw new InvalidDataException($"'{path}' is truncated: its header declares {length} data bytes but only {read} follow.");
        }

        if (stream.ReadByte() >= 0)
        {
            throw new InvalidDataException($"'{path}' has more data than its header declares ({length} bytes): expected the file to end there.");
        }

        return bytes;
    }
}
