using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

/// <summary>Access to the package data build.sh installs; tests that need a missing source end inconclusive.</summary>
internal static class RealData
{
    public static BenchmarkSources Sources { get; } = BenchmarkSources.Default;

    public static void Require(string path, string what)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
        {
            Assert.Inconclusive($"{what} is not installed at '{path}' (run ./build.sh build).");
        }
    }

    /// <summary>The installed fonts, or inconclusive when there are none.</summary>
    public static IReadOnlyList<string> Fonts()
    {
        if (!Directory.Exists(Sources.FontDirectory))
        {
            Assert.Inconclusive($"No font directory '{Sources.FontDirectory}' (run ./build.sh build).");
        }

        var fonts = FontCatalog.Find(Sources.FontDirectory);
        if (fonts.Count == 0)
        {
            Assert.Inconclusive($"No fonts under '{Sources.FontDirectory}' (run ./build.sh build).");
        }

        return fonts;
    }
}
