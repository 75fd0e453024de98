using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>Issue 17 item 1: an output that is (or, as a directory, holds) an input is refused by file identity.</summary>
[TestClass]
public sealed class OutputOverlapTests
{
    private static string Input(TempDirectory dir, string name)
    {
        string path = dir.File(name);
        File.WriteAllText(path, "input");
        return path;
    }

    [TestMethod]
    public void SameFileSpelledDifferently()
    {
        using var dir = new TempDirectory();
        string input = Input(dir, "sub/base.safetensors");
        string respelled = Path.Combine(dir.Path, "sub", "..", "sub", ".", "base.safetensors");
        var error = Assert.ThrowsExactly<ArgumentException>(() => OutputOverlap.EnsureDistinct(respelled, [input]));
        StringAssert.Contains(error.Message, "would destroy that input");
    }

    [TestMethod]
    public void HardLinkToAnInput()
    {
        if (OperatingSystem.IsWindows()) Assert.Inconclusive("hard links are made with ln here");
        using var dir = new TempDirectory();
        string input = Input(dir, "base.safetensors");
        string link = dir.File("link.safetensors");
        using (var ln = System.Diagnostics.Process.Start("ln", [input, link])) ln.WaitForExit();
        Assert.ThrowsExactly<ArgumentException>(() => OutputOverlap.EnsureDistinct(link, [input]));
    }

    [TestMethod]
    public void SymbolicLinkToAnInput()
    {
        using var dir = new TempDirectory();
        string input = Input(dir, "base.safetensors");
        string link = dir.File("link.safetensors");
        File.CreateSymbolicLink(link, input);
        Assert.ThrowsExactly<ArgumentException>(() => OutputOverlap.EnsureDistinct(link, [input]));
    }

    [TestMethod]
    public void DirectoryOutputHoldingAnInput()
    {
        using var dir = new TempDirectory();
        string input = Input(dir, "models/experts/a/model.safetensors");
        var error = Assert.ThrowsExactly<ArgumentException>(() => OutputOverlap.EnsureDistinct(dir.File("models") + "/", [input]));
        StringAssert.Contains(error.Message, "holds the input");
    }

    [TestMethod]
    public void ShardListedByTheIndexAFileOutputWouldReplace()
    {
        using var dir = new TempDirectory();
        string shard = Input(dir, "merged-00001-of-00001.safetensors");
        File.WriteAllText(dir.File("merged.safetensors.index.json"), """{"weight_map":{"w":"merged-00001-of-00001.safetensors"}}""");
        Assert.ThrowsExactly<ArgumentException>(() => OutputOverlap.EnsureDistinct(dir.File("merged.safetensors"), [shard]));
    }

    [TestMethod]
    public void DistinctOutputsPass()
    {
        using var dir = new TempDirectory();
        string input = Input(dir, "base.safetensors");
        OutputOverlap.EnsureDistinct(dir.File("merged.safetensors"), [input]);
        OutputOverlap.EnsureDistinct(dir.File("out"), [input]);
        OutputOverlap.EnsureDistinct(dir.File("missing/dir/out.safetensors"), [input]);
    }
}
