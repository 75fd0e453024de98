namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Reads the UCI optical recognition of handwritten digits as shipped by scikit-learn (<c>digits.csv.gz</c>):
/// one image per line, 64 integers 0..16 (an 8×8 grid, row-major) followed by the digit 0..9, no header.
/// Images become MNIST-like: scaled to [0, 1], upsampled bilinearly to a box of <c>size − 2·margin</c> pixels and
/// centred in a <c>size</c>×<c>size</c> black image (MNIST digits fill a 20×20 box in 28×28).
/// </summary>
public static class OpticalDigitsCsvReader
{
    /// <summary>Side of the scanned grid, 8 cells.</summary>
    public const int GridSize = 8;
    /// <summary>Largest cell value, 16 (scaled to 1).</summary>
    public const int MaxValue = 16;

    /// <summary>The digits 0–9, in label order.</summary>
    public static readonly IReadOnlyList<string> ClassNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <summary>Reads every digit of the file as an MNIST-like image.</summary>
    /// <param name="path"><c>digits.csv.gz</c> (gzip or plain CSV).</param>
    /// <param name="size">Side of the output images in pixels.</param>
    /// <param name="margin">Black border around the upsampled digit, in pixels.</param>
    /// <param name="name">The data set's name.</param>
    public static ImageDataset Read(string path, int size = 28, int margin = 4, string name = "optical-digits")
    {
        ArgumentOutOfRangeException.ThrowIfNegative(margin);
        int box = size - 2 * margin;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(box, $"{nameof(size)} - 2·{nameof(margin)}");

        var (grids, labels) = DataFile.Parse(path, stream => ParseRows(stream, path));
        var resampler = new BilinearResampler(GridSize, GridSize, box, box);
        int imageSize = size * size;
        var pixels = new float[(long)labels.Length * imageSize];
        Span<float> upsampled = new float[box * box];
        for (int i = 0; i < labels.Length; i++)
        {
            resampler.Resize(grids.AsSpan(i * GridSize * GridSize, GridSize * GridSize), upsampled);
            Span<float> image = pixels.AsSpan(i * imageSize, imageSize);
            for (int y = 0; y < box; y++)
            {
                upsampled.Slice(y * box, box).CopyTo(image.Slice((y + margin) * size + margin, box));
            }
        }

        return new ImageDataset(name, pixels, labels, ClassNames, 1, size, size);
    }

    private static (float[] Grids, int[] Labels) ParseRows(Stream stream, string path)
    {
        const int columns = GridSize * GridSize + 1;
        var grids = new List<float>();
        var labels = new List<int>();
        using var reader = new StreamReader(stream);
        int lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            string[] fields = line.Split(',');
            if (fields.Length != columns)
            {
                throw new InvalidDataException($"'{path}' line {lineNumber}: {fields.Length} columns, expected {columns} (64 pixel values and the label).");
            }

            for (int c = 0; c < columns; c++)
            {
                // Accept "5" and "5.0": both appear in exports of this data set.
                if (!double.TryParse(fields[c], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value) ||
                    value != Math.Floor(value))
                {
                    throw new InvalidDataException($"'{path}' line {lineNumber} column {c + 1}: '{fields[c]}' is not an integer.");
                }

                int max = c == columns - 1 ? 9 : MaxValue;
                if (value < 0 || value > max)
                {
                    throw new InvalidDataException($"'{path}' line {lineNumber} column {c + 1}: {value} is outside 0..{max}.");
                }

                if (c == columns - 1)
                {
                    labels.Add((int)value);
                }
                else
                {
                    grids.Add((float)value / MaxValue);
                }
            }
        }

        if (labels.Count == 0)
        {
            throw new InvalidDataException($"'{path}' holds no rows: expected lines of 64 pixel values and a label.");
        }

        return (grids.ToArray(), labels.ToArray());
    }
}
