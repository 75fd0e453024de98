using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>Finds the font files glyph tasks are rendered from.</summary>
public static class FontCatalog
{
    /// <summary>Where Debian's font packages install (fonts-dejavu-*, fonts-liberation, fonts-freefont-ttf, fonts-urw-base35, fonts-croscore).</summary>
    public const string DefaultDirectory = "/usr/share/fonts";

    /// <summary>
    /// Families left out: their Unicode cmaps map the Latin letters and digits to pictographs or Greek (URW's
    /// Standard Symbols PS and D050000L, the Zapf Dingbats clone, claim 'A' and '0'), so they would put a dingbat
    /// under the label "A".
    /// </summary>
    public static readonly IReadOnlyList<string> SymbolFamilies =
        ["Standard Symbols PS", "D050000L", "Symbol", "Dingbats", "Wingdings", "Webdings", "OpenSymbol"];

    /// <summary>TrueType and OpenType files (<c>.ttf</c>, <c>.otf</c>) under <paramref name="directory"/>, recursively, in ordinal path order, symbol fonts left out.</summary>
    public static IReadOnlyList<string> Find(string directory = DefaultDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException(
                $"Font directory '{directory}' does not exist: install the Debian font packages (./build.sh build) or pass another directory.");
        }

        var fonts = new List<string>();
        foreach (string file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string extension = Path.GetExtension(file);
            if (!extension.Equals(".ttf", StringComparison.OrdinalIgnoreCase) && !extension.Equals(".otf", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            using var typeface = SKTypeface.FromFile(file);
            if (typeface is not null && !SymbolFamilies.Contains(typeface.FamilyName, StringComparer.OrdinalIgnoreCase))
            {
                fonts.Add(file);
            }
        }

        return fonts;
    }
}
