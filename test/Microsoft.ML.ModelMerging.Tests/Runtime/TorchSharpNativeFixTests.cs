using System.Diagnostics;

namespace Microsoft.ML.ModelMerging.Tests.Runtime;

/// <summary>
/// The build marks libLibTorchSharp.so's GLIBCXX_3.4.32 need weak in the output copy only, and only where libstdc++ lacks it.
/// Checked with binutils' readelf, independently of the MSBuild task that does the patching.
/// </summary>
[TestClass]
public sealed class TorchSharpNativeFixTests
{
    private static string ReadElfVersions(string path)
    {
        var start = new ProcessStartInfo("readelf", $"-V \"{path}\"") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        string text = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return text;
    }

    private static string? FlagsOf(string readelfOutput, string version) =>
        readelfOutput.Split('\n').Where(l => l.Contains("Name: " + version + " ", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf("Flags:", StringComparison.Ordinal) + 6)..].Trim().Split(' ')[0]).FirstOrDefault();

    [TestMethod]
    public void OutputCopyIsPatchedOnlyWhereNeededAndTheNuGetCacheIsUntouched()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The fix applies to Linux builds only.");
        string output = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.IsTrue(File.Exists(output), output);
        string systemLib = new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }.First(File.Exists);
        bool systemHasVersion = File.ReadAllText(systemLib, System.Text.Encoding.Latin1).Contains("GLIBCXX_3.4.32\0", StringComparison.Ordinal);

        Assert.AreEqual(systemHasVersion ? "none" : "WEAK", FlagsOf(ReadElfVersions(output), "GLIBCXX_3.4.32"));

        string cache = Path.Combine(Environment.GetEnvironmentVariable("NUGET_PACKAGES") ??
            Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"),
            "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (File.Exists(cache)) Assert.AreEqual("none", FlagsOf(ReadElfVersions(cache), "GLIBCXX_3.4.32"));
    }
}
