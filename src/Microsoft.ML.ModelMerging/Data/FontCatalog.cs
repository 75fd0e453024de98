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

    /// <summary>
    /// The folders under <see cref="DefaultDirectory"/> that the font packages <c>build.sh</c> installs write to. Only these
    /// are read there: the zoos' glyph tasks are fingerprinted, and any other font a machine happens to have (ImageMagick
    /// alone pulls in fonts-noto-mono and fonts-droid-fallback) would change every rendered image and so every split.
    /// </summary>
    public static readonly IReadOnlyList<string> PackageFolders =
        ["opentype/urw-base35", "truetype/croscore", "truetype/dejavu", "truetype/freefont", "truetype/liberation"];

    /// <summary>
    /// TrueType and OpenType files (<c>.ttf</c>, <c>.otf</c>) in ordinal path order, symbol fonts left out: under
    /// <see cref="DefaultDirectory"/> those of <see cref="PackageFolders"/>, under any other directory every one, recursively.
    /// </summary>
    public static IReadOnlyList<string> Find(string directory = DefaultDirectory) =>
        Find(directory, IsDefault(directory) ? PackageFolders : null);

    /// <summary>The fonts under <paramref name="directory"/>, only in its sub-folders <paramref name="folders"/> when given.</summary>
    public static IReadOnlyList<string> Find(string directory, IReadOnlyList<string>? folders)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException(
                $"Font directory '{directory}' does not exist: install the Debian font packages (./build.sh build) or pass another directory.");
        }

        if (folders is not null && !folders.Any(folder => Directory.Exists(Path.Combine(directory, folder))))
            throw new DirectoryNotFoundException(
                $"None of the font folders {string.Join(", ", folders)} is under '{directory}': install the Debian font packages (./build.sh build), whose fonts render the zoos' tasks.");
        IEnumerable<string> files = folders is null
            ? Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)
            : folders.Select(folder => Path.Combine(directory, folder)).Where(Directory.Exists)
                .SelectMany(folder => Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories));
        var fonts = new List<string>();
        foreach (string file in files.Order(StringComparer.Ordinal))
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

    private static bool IsDefault(string directory) =>
        !string.IsNullOrWhiteSpace(directory) &&
        string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)), DefaultDirectory, StringComparison.Ordinal);
}
