using System.Text;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Renders characters from a set of font files into grayscale images (white glyph on black, values in [0, 1]) with
/// seeded variation. The same fonts, characters, options and seed give the same bytes. Not thread-safe: use one
/// renderer per thread.
/// </summary>
public sealed class GlyphRenderer : IDisposable
{
    // Outlines are taken at this size, then scaled to the image; large enough that the outline is exact.
    private const float OutlineSize = 100f;

    private readonly SKTypeface[] typefaces;
    private readonly SKFont[] fonts;
    private readonly Dictionary<(int Font, int CodePoint), SKPath?> outlines = [];

    /// <summary>Loads the fonts.</summary>
    /// <param name="fontFiles">TrueType or OpenType files; at least one.</param>
    /// <param name="options">Size and variation of the rendering; defaults when null.</param>
    /// <exception cref="ArgumentException">No font file, or invalid options.</exception>
    /// <exception cref="InvalidDataException">A file is not a font SkiaSharp can load.</exception>
    public GlyphRenderer(IEnumerable<string> fontFiles, GlyphRenderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(fontFiles);
        Options = options ?? new GlyphRenderOptions();
        Options.Validate();
        FontFiles = fontFiles.ToArray();
        if (FontFiles.Count == 0)
        {
            throw new ArgumentException("Glyph rendering needs at least one font file.", nameof(fontFiles));
        }

        typefaces = new SKTypeface[FontFiles.Count];
        fonts = new SKFont[FontFiles.Count];
        for (int i = 0; i < FontFiles.Count; i++)
        {
            typefaces[i] = SKTypeface.FromFile(FontFiles[i])
                ?? throw new InvalidDataException($"Font file '{FontFiles[i]}' could not be loaded (expected a TrueType or OpenType font).");
            fonts[i] = new SKFont(typefaces[i], OutlineSize);
        }
    }

    /// <summary>The font files, in the order given.</summary>
    public IReadOnlyList<string> FontFiles { get; }

    /// <summary>Size and variation of the rendering.</summary>
    public GlyphRenderOptions Options { get; }

    /// <summary>The font files that have a visible glyph for <paramref name="character"/>.</summary>
    public IReadOnlyList<string> FontsCovering(string character)
    {
        int codePoint = CodePoint(character);
        return Covering(codePoint).Select(i => FontFiles[i]).ToArray();
    }

    /// <summary>
    /// Renders <paramref name="imagesPerClass"/> images of every character, grouped by class (all images of the first
    /// character, then the second, ...). Each image uses a font drawn uniformly among those that have the character.
    /// </summary>
    /// <param name="characters">One Unicode character (code point) per class.</param>
    /// <param name="imagesPerClass">Images rendered per character.</param>
    /// <param name="seed">Seed of every random choice.</param>
    /// <param name="name">Name of the data set.</param>
    /// <param name="classNames">Class names; the characters themselves when null.</param>
    public ImageDataset Render(IReadOnlyList<string> characters, int imagesPerClass, int seed, string name, IReadOnlyList<string>? classNames = null)
    {
        ArgumentNullException.ThrowIfNull(characters);
        ArgumentOutOfRangeException.ThrowIfNegative(imagesPerClass);
        if (classNames is not null && classNames.Count != characters.Count)
        {
            throw new ArgumentException($"{characters.Count} characters need {characters.Count} class names, got {classNames.Count}.", nameof(classNames));
        }

        int[][] covering = characters.Select(character =>
        {
            int[] fontsWithGlyph = Covering(CodePoint(character));
            return fontsWithGlyph.Length > 0 ? fontsWithGlyph : throw new InvalidOperationException(
                $"No font has a glyph for '{character}' (U+{CodePoint(character):X4}); searched {FontFiles.Count} fonts: {string.Join(", ", FontFiles.Select(Path.GetFileName))}.");
        }).ToArray();

        int side = Options.Size, size = side * side;
        var pixels = new float[(long)characters.Count * imagesPerClass * size];
        var labels = new int[characters.Count * imagesPerClass];
        var random = new SeededRandom(seed, stream: 0x6C7F);
        using var bitmap = new SKBitmap(new SKImageInfo(side, side, SKColorType.Alpha8, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bitmap);
        using var paint = new SKPaint { Color = SKColors.White, IsAntialias = true, StrokeJoin = SKStrokeJoin.Round };
        using var placed = new SKPath();
        for (int c = 0; c < characters.Count; c++)
        {
            int codePoint = CodePoint(characters[c]);
            for (int k = 0; k < imagesPerClass; k++)
            {
                int index = c * imagesPerClass + k;
                int font = covering[c][random.NextInt(covering[c].Length)];
                SKPath outline = Outline(font, codePoint)!;
                placed.Reset();
                outline.Transform(Placement(outline.TightBounds, random), placed);
                float boldness = random.NextFloat(0, Options.MaxBoldness);
                paint.Style = boldness > 0 ? SKPaintStyle.StrokeAndFill : SKPaintStyle.Fill;
                paint.StrokeWidth = boldness;
                canvas.Clear(SKColors.Transparent);
                canvas.DrawPath(placed, paint);
                canvas.Flush();
                PixelBytes.ToUnitRange(bitmap.GetPixelSpan(), pixels.AsSpan(index * size, size));
                labels[index] = c;
            }
        }

        return new ImageDataset(name, pixels, labels, classNames ?? characters, 1, side, side);
    }

    /// <summary>Releases the fonts and cached outlines.</summary>
    public void Dispose()
    {
        foreach (var outline in outlines.Values)
        {
            outline?.Dispose();
        }

        foreach (var font in fonts)
        {
            font?.Dispose();
        }

        foreach (var typeface in typefaces)
        {
            typeface?.Dispose();
        }
    }

    /// <summary>Scale the outline box to a random fill of the image, stretch, rotate and shift it about the centre.</summary>
    private SKMatrix Placement(SKRect bounds, SeededRandom random)
    {
        float fill = random.NextFloat(Options.MinFill, Options.MaxFill);
        float logStretch = MathF.Log(1 + Options.MaxStretch);
        float stretch = MathF.Exp(random.NextFloat(-logStretch, logStretch));
        float degrees = random.NextFloat(-Options.MaxRotationDegrees, Options.MaxRotationDegrees);
        float shiftX = random.NextFloat(-Options.MaxShift, Options.MaxShift);
        float shiftY = random.NextFloat(-Options.MaxShift, Options.MaxShift);

        float scale = fill * Options.Size / Math.Max(bounds.Width * stretch, bounds.Height);
        float centre = Options.Size / 2f;
        var matrix = SKMatrix.CreateTranslation(-bounds.MidX, -bounds.MidY);
        matrix = matrix.PostConcat(SKMatrix.CreateScale(scale * stretch, scale));
        matrix = matrix.PostConcat(SKMatrix.CreateRotationDegrees(degrees));
        return matrix.PostConcat(SKMatrix.CreateTranslation(centre + shiftX, centre + shiftY));
    }

    private int[] Covering(int codePoint) =>
        Enumerable.Range(0, typefaces.Length).Where(font => Outline(font, codePoint) is not null).ToArray();

    /// <summary>The glyph outline of a code point in one font, or null when the font lacks it or it draws nothing.</summary>
    private SKPath? Outline(int font, int codePoint)
    {
        if (!outlines.TryGetValue((font, codePoint), out SKPath? outline))
        {
            outline = null;
            if (typefaces[font].ContainsGlyph(codePoint))
            {
                outline = fonts[font].GetGlyphPath(typefaces[font].GetGlyph(codePoint));
                if (outline is not null && outline.TightBounds is { Width: <= 0 } or { Height: <= 0 })
                {
                    outline.Dispose();
                    outline = null;
                }
            }

            outlines[(font, codePoint)] = outline;
        }

        return outline;
    }

    private static int CodePoint(string character)
    {
        ArgumentNullException.ThrowIfNull(character);
        if (Rune.DecodeFromUtf16(character, out Rune rune, out int consumed) != System.Buffers.OperationStatus.Done || consumed != character.Length)
        {
            throw new ArgumentException($"'{character}' is not exactly one Unicode character.", nameof(character));
        }

        return rune.Value;
    }
}
