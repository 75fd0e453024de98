using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class GlyphRendererTests
{
    private static readonly string[] Characters = ["A", "7", "Ж", "→"];

    [TestMethod]
    public void SameFontsAndSeedGiveTheSameBytes()
    {
        IReadOnlyList<string> fonts = RealData.Fonts();

        ImageDataset first, second, otherSeed;
        using (var renderer = new GlyphRenderer(fonts))
        {
            first = renderer.Render(Characters, 6, seed: 11, "glyphs");
            otherSeed = renderer.Render(Characters, 6, seed: 12, "glyphs");
        }

        using (var renderer = new GlyphRenderer(fonts))
        {
            second = renderer.Render(Characters, 6, seed: 11, "glyphs");
        }

        Assert.AreEqual(first.Fingerprint, second.Fingerprint);
        CollectionAssert.AreEqual(first.Pixels.ToArray(), second.Pixels.ToArray());
        Assert.AreNotEqual(first.Fingerprint, otherSeed.Fingerprint);
    }

    [TestMethod]
    public void ImagesAreGroupedByClassAndHoldOneCentredGlyph()
    {
        using var renderer = new GlyphRenderer(RealData.Fonts());
        var options = renderer.Options;

        ImageDataset data = renderer.Render(Characters, 5, seed: 3, "glyphs", ["a", "seven", "zhe", "arrow"]);

        Assert.AreEqual(20, data.Count);
        CollectionAssert.AreEqual(new[] { "a", "seven", "zhe", "arrow" }, data.ClassNames.ToArray());
        CollectionAssert.AreEqual(Enumerable.Range(0, 4).SelectMany(c => Enumerable.Repeat(c, 5)).ToArray(), data.Labels.ToArray());
        for (int i = 0; i < data.Count; i++)
        {
            var (top, bottom, left, right, peak) = InkBox(data.Image(i), options.Size);
            Assert.IsGreaterThan(0.9f, peak, $"image {i} has solid ink");
            // The glyph box is at most MaxFill of the image, grown by rotation, shift and stroke: it never touches two opposite borders.
            Assert.IsTrue(top > 0 || bottom < options.Size - 1, $"image {i} spans the full height");
            Assert.IsTrue(left > 0 || right < options.Size - 1, $"image {i} spans the full width");
            Assert.IsLessThan(options.MaxShift + 3, Math.Abs((top + bottom) / 2.0 - (options.Size - 1) / 2.0), $"image {i} vertical centre");
            Assert.IsGreaterThanOrEqualTo(options.MinFill * options.Size - 2, Math.Max(bottom - top, right - left) + 1.0, $"image {i} glyph size");
        }
    }

    [TestMethod]
    public void SymbolFontsAreNotCandidates()
    {
        IReadOnlyList<string> fonts = RealData.Fonts();

        Assert.IsFalse(fonts.Any(f => Path.GetFileName(f).StartsWith("StandardSymbolsPS", StringComparison.Ordinal)));
        Assert.IsFalse(fonts.Any(f => Path.GetFileName(f).StartsWith("D050000L", StringComparison.Ordinal)));
        using var renderer = new GlyphRenderer(fonts);
        Assert.IsGreaterThan(20, renderer.FontsCovering("A").Count);
    }

    [TestMethod]
    public void CharacterWithoutAnyFontIsAnError()
    {
        using var renderer = new GlyphRenderer(RealData.Fonts());

        // U+10FFFD is a private-use code point no installed font draws.
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => renderer.Render(["A", char.ConvertFromUtf32(0x10FFFD)], 1, 0, "x"));

        Assert.Contains("U+10FFFD", error.Message);
        Assert.ThrowsExactly<ArgumentException>(() => renderer.Render(["AB"], 1, 0, "x"));
    }

    [TestMethod]
    public void UnloadableFontFileIsAnErrorNamingIt()
    {
        using var dir = new TempDirectory();
        string bogus = dir.File("bogus.ttf");
        File.WriteAllText(bogus, "not a font");

        var error = Assert.ThrowsExactly<InvalidDataException>(() => new GlyphRenderer([bogus]));

        Assert.Contains(bogus, error.Message);
    }

    private static (int Top, int Bottom, int Left, int Right, float Peak) InkBox(ReadOnlySpan<float> image, int size)
    {
        int top = size, bottom = -1, left = size, right = -1;
        float peak = 0;
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++)
            {
                float v = image[y * size + x];
                peak = Math.Max(peak, v);
                if (v > 0.25f)
                {
                    top = Math.Min(top, y);
                    bottom = Math.Max(bottom, y);
                    left = Math.Min(left, x);
                    right = Math.Max(right, x);
                }
            }
        }

        return (top, bottom, left, right, peak);
    }
}
