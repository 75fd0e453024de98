namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Bilinear resizing of one single-channel image with pixel-centre alignment (source coordinate
/// (x + 0.5)·srcW/dstW − 0.5, clamped at the borders), the convention of OpenCV and of PyTorch's
/// <c>align_corners=False</c>. The weights depend only on the sizes, so one resampler serves a whole data set.
/// </summary>
public sealed class BilinearResampler
{
    private readonly Axis rows;
    private readonly Axis columns;

    /// <summary>A resampler from [<paramref name="sourceHeight"/>, <paramref name="sourceWidth"/>] to [<paramref name="height"/>, <paramref name="width"/>] pixels.</summary>
    public BilinearResampler(int sourceHeight, int sourceWidth, int height, int width)
    {
        SourceHeight = sourceHeight;
        SourceWidth = sourceWidth;
        Height = height;
        Width = width;
        rows = new Axis(sourceHeight, height);
        columns = new Axis(sourceWidth, width);
    }

    /// <summary>Rows of the source images.</summary>
    public int SourceHeight { get; }

    /// <summary>Columns of the source images.</summary>
    public int SourceWidth { get; }

    /// <summary>Rows of the resized images.</summary>
    public int Height { get; }

    /// <summary>Columns of the resized images.</summary>
    public int Width { get; }

    /// <summary>Resizes <paramref name="source"/> [SourceHeight, SourceWidth] into <paramref name="destination"/> [Height, Width].</summary>
    public void Resize(ReadOnlySpan<float> source, Span<float> destination)
    {
        if (source.Length != SourceHeight * SourceWidth || destination.Length != Height * Width)
        {
            throw new ArgumentException(
                $"Expected a {SourceHeight}×{SourceWidth} source and a {Height}×{Width} destination, got {source.Length} and {destination.Length} values.");
        }

        for (int y = 0; y < Height; y++)
        {
            ReadOnlySpan<float> top = source.Slice(rows.Low[y] * SourceWidth, SourceWidth);
            ReadOnlySpan<float> bottom = source.Slice(rows.High[y] * SourceWidth, SourceWidth);
            float wy = rows.Weight[y];
            Span<float> output = destination.Slice(y * Width, Width);
            for (int x = 0; x < Width; x++)
            {
                int x0 = columns.Low[x], x1 = columns.High[x];
                float wx = columns.Weight[x];
                float upper = top[x0] + wx * (top[x1] - top[x0]);
                float lower = bottom[x0] + wx * (bottom[x1] - bottom[x0]);
                output[x] = upper + wy * (lower - upper);
            }
        }
    }

    /// <summary>For each output coordinate: the two source neighbours and the weight of the higher one.</summary>
    private sealed class Axis
    {
        public Axis(int sourceSize, int size)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sourceSize);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
            Low = new int[size];
            High = new int[size];
            Weight = new float[size];
            double scale = (double)sourceSize / size;
            for (int i = 0; i < size; i++)
            {
                double position = Math.Clamp((i + 0.5) * scale - 0.5, 0, sourceSize - 1);
                Low[i] = (int)Math.Floor(position);
                High[i] = Math.Min(Low[i] + 1, sourceSize - 1);
                Weight[i] = (float)(position - Low[i]);
            }
        }

        public int[] Low { get; }

        public int[] High { get; }

        public float[] Weight { get; }
    }
}
