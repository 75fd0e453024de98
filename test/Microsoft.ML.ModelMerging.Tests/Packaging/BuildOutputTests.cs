using System.Runtime.InteropServices;

namespace Microsoft.ML.ModelMerging.Tests.Packaging;

/// <summary>What build/Microsoft.ML.ModelMerging.targets does to a build output, checked on this test project's own.</summary>
[TestClass]
public sealed class BuildOutputTests
{
    private static string Output => AppContext.BaseDirectory;

    [TestMethod]
    public void ARidLessBuildCarriesLibtorchOfTheBuildMachineOnly()
    {
        string[] libtorch = ["libtorch_cpu.so", "torch_cpu.dll", "libtorch_cpu.dylib"];
        var copies = Directory.GetFiles(Output, "*", SearchOption.AllDirectories)
            .Where(f => libtorch.Contains(Path.GetFileName(f))).Select(f => Path.GetRelativePath(Output, f)).ToList();
        Assert.HasCount(1, copies, "one libtorch: " + string.Join(", ", copies));
        StringAssert.Contains(copies[0], RuntimeInformation.RuntimeIdentifier.Split('-')[0], "the build machine's platform");

        // No other package's native files for other platforms either: only the machine's RID, its OS, or unix.
        var runtimes = Path.Combine(Output, "runtimes");
        var rid = RuntimeInformation.RuntimeIdentifier;
        var loadable = new[] { rid, rid[..rid.LastIndexOf('-')], rid.Split('-')[0], OperatingSystem.IsWindows() ? rid : "unix" };
        foreach (var dir in Directory.Exists(runtimes) ? Directory.GetDirectories(runtimes) : [])
            CollectionAssert.Contains(loadable, Path.GetFileName(dir), $"runtimes/{Path.GetFileName(dir)} is for another platform");
    }

    [TestMethod]
    public void TorchSharpBridgeLoadsFromTheOutput()
    {
        // libLibTorchSharp now sits in runtimes/<rid>/native of the output: the patched copy is the one loaded.
        using var sum = TorchSharp.torch.ones(3).sum();
        Assert.AreEqual(3f, sum.item<float>());
        var bridge = Directory.GetFiles(Output, "*LibTorchSharp.*", SearchOption.AllDirectories);
        Assert.HasCount(1, bridge, string.Join(", ", bridge));
    }
}
