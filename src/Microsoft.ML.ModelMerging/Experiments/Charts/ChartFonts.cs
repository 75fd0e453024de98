using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Experiments.Charts;

/// <summary>
/// The font charts are drawn in. On Windows and macOS, ScottPlot's own choice among the system fonts. Elsewhere Debian's
/// DejaVu Sans (fonts-dejavu-core), registered with ScottPlot from its files: the Linux build of SkiaSharp the package
/// ships has no fontconfig, so "sans-serif" resolves to whichever family its font directory lists first (DejaVu Serif
/// here), and a chart would change with the fonts installed.
/// </summary>
internal static class ChartFonts
{
    /// <summary>The files looked for under <see cref="FontCatalog.DefaultDirectory"/>: regular (ticks, labels) and bold (titles).</summary>
    public static readonly IReadOnlyList<string> DejaVuSansFiles = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf"];

    // A name no installed family has, so ScottPlot's resolver of system fonts never answers it before the registered files.
    private const string RegisteredName = "DejaVu Sans (Microsoft.ML.ModelMerging)";

    private static readonly Lazy<string?> Family = new(Register, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The font family name to give every text of a chart, or null to leave ScottPlot's default (Windows, macOS).</summary>
    /// <exception cref="FileNotFoundException">DejaVu Sans is not installed (Linux and other systems).</exception>
    public static string? Name => Family.Value;

    private static string? Register()
    {
        if (OperatingSystem.IsWindows() || OperatingSystem.IsMacOS()) return null;
        string regular = Find(FontCatalog.DefaultDirectory, DejaVuSansFiles[0]), bold = Find(FontCatalog.DefaultDirectory, DejaVuSansFiles[1]);
        ScottPlot.Fonts.AddFontFile(RegisteredName, regular, bold: false, italic: false);
        ScottPlot.Fonts.AddFontFile(RegisteredName, bold, bold: true, italic: false);
        return RegisteredName;
    }

    /// <summary>The first <paramref name="fileName"/> under <paramref name="directory"/> (recursively, ordinal path order).</summary>
    /// <exception cref="FileNotFoundException">There is none, or no such directory; the message names what was looked for where.</exception>
    internal static string Find(string directory, string fileName)
    {
        string? file = Directory.Exists(directory)
            ? Directory.EnumerateFiles(directory, fileName, new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true }).Order(StringComparer.Ordinal).FirstOrDefault()
            : null;
        return file ?? throw new FileNotFoundException(
            $"Charts are drawn in DejaVu Sans, and no {fileName} was found under '{directory}' (looked for {string.Join(" and ", DejaVuSansFiles)}): " +
            "install the Debian package fonts-dejavu-core (./build.sh build installs it).", fileName);
    }
}
