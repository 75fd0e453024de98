using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>A colour in [0, 1] per channel.</summary>
internal readonly record struct Rgb(float R, float G, float B)
{
    public static Rgb Lerp(Rgb a, Rgb b, float t) => new(a.R + (b.R - a.R) * t, a.G + (b.G - a.G) * t, a.B + (b.B - a.B) * t);

    public Rgb Scale(float f) => new(Math.Clamp(R * f, 0, 1), Math.Clamp(G * f, 0, 1), Math.Clamp(B * f, 0, 1));

    /// <summary>From hue (0..1), saturation and value, so renderers can draw colours of a chosen family.</summary>
    public static Rgb FromHsv(float h, float s, float v)
    {
        h = (h % 1 + 1) % 1 * 6;
        int i = (int)h;
        float f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
        return i switch { 0 => new(v, t, p), 1 => new(q, v, p), 2 => new(p, v, t), 3 => new(p, q, v), 4 => new(t, p, v), _ => new(v, p, q) };
    }

    public SKColor ToSkia() => new((byte)MathF.Round(R * 255), (byte)MathF.Round(G * 255), (byte)MathF.Round(B * 255));
}

/// <summary>
/// One square RGB image being drawn: planar float channels in [0, 1] (the layout <see cref="ImageDataset"/> holds), plus
/// a Skia canvas for vector work (text, paths) that is composited back in. Every renderer of the RGB tasks draws here.
/// </summary>
internal sealed class RgbRaster : IDisposable
{
    private readonly SKBitmap bitmap;

    public RgbRaster(int size)
    {
        Size = size;
        Pixels = new float[3 * size * size];
        bitmap = new SKBitmap(new SKImageInfo(size, size, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        Canvas = new SKCanvas(bitmap);
    }

    public int Size { get; }

    /// <summary>[3, Size, Size], R plane then G then B.</summary>
    public float[] Pixels { get; }

    public SKCanvas Canvas { get; }

    public void Set(int x, int y, Rgb c)
    {
        int plane = Size * Size, i = y * Size + x;
        Pixels[i] = Math.Clamp(c.R, 0, 1);
        Pixels[plane + i] = Math.Clamp(c.G, 0, 1);
        Pixels[2 * plane + i] = Math.Clamp(c.B, 0, 1);
    }

    public Rgb Get(int x, int y)
    {
        int plane = Size * Size, i = y * Size + x;
        return new Rgb(Pixels[i], Pixels[plane + i], Pixels[2 * plane + i]);
    }

    /// <summary>Paints colour <paramref name="c"/> over the pixel with opacity <paramref name="alpha"/>.</summary>
    public void Blend(int x, int y, Rgb c, float alpha)
    {
        if ((uint)x >= (uint)Size || (uint)y >= (uint)Size || alpha <= 0) return;
        Set(x, y, Rgb.Lerp(Get(x, y), c, Math.Min(alpha, 1)));
    }

    /// <summary>Fills every pixel from a function of its centre (x, y in pixels).</summary>
    public void Fill(Func<float, float, Rgb> colour)
    {
        for (int y = 0; y < Size; y++)
            for (int x = 0; x < Size; x++)
                Set(x, y, colour(x + 0.5f, y + 0.5f));
    }

    /// <summary>Clears the vector layer; draw on <see cref="Canvas"/>, then <see cref="Composite"/>.</summary>
    public void BeginVector() => Canvas.Clear(SKColors.Transparent);

    /// <summary>Blends what was drawn on <see cref="Canvas"/> since <see cref="BeginVector"/> over the pixels (alpha compositing).</summary>
    public void Composite()
    {
        Canvas.Flush();
        ReadOnlySpan<byte> rgba = bitmap.GetPixelSpan();
        for (int i = 0, n = Size * Size; i < n; i++)
        {
            byte a = rgba[4 * i + 3];
            if (a == 0) continue;
            Blend(i % Size, i / Size, new Rgb(rgba[4 * i] / 255f, rgba[4 * i + 1] / 255f, rgba[4 * i + 2] / 255f), a / 255f);
        }
    }

    /// <summary>Adds zero-mean noise of amplitude <paramref name="amount"/> per channel (sensor noise), clamped.</summary>
    public void AddNoise(SeededRandom random, float amount)
    {
        if (amount <= 0) return;
        for (int i = 0; i < Pixels.Length; i++)
            Pixels[i] = Math.Clamp(Pixels[i] + random.NextFloat(-amount, amount), 0, 1);
    }

    /// <summary>Quantises to 8 bits, as a stored photograph is, and copies the image into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<float> destination)
    {
        for (int i = 0; i < Pixels.Length; i++)
            destination[i] = MathF.Round(Math.Clamp(Pixels[i], 0, 1) * 255) / 255f;
    }

    public void Dispose()
    {
        Canvas.Dispose();
        bitmap.Dispose();
    }
}
