using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Tests.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// A dense merge whose <c>--out</c> is an adapter folder is refused: its <c>model.safetensors</c> would sit beside the
/// adapter, and <c>eval</c>, <c>merge</c> and <c>pool add</c> would read the folder as the adapter.
/// </summary>
[TestClass]
public sealed class DenseMergeIntoAdapterFolderTests
{
    [TestMethod]
    public void ADenseMergeIsNotWrittenIntoAnAdapterFolder()
    {
        string committed = Path.Combine(CommittedZoo.Default, "lora", "experts");
        if (!PeftAdapterFolder.IsAdapter(Path.Combine(committed, "scenes"))) Assert.Inconclusive($"{committed} is not committed.");
        using var dir = new TempDirectory();
        string other = dir.File("other-adapter");
        Directory.CreateDirectory(other);
        foreach (string name in new[] { PeftAdapterFolder.ConfigFileName, PeftAdapterFolder.WeightsFileName })
            File.Copy(Path.Combine(committed, "textures", name), Path.Combine(other, name));

        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", Path.Combine(CommittedZoo.Default, "pretrained.safetensors"),
            "--expert", Path.Combine(committed, "scenes"), "--out", other);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, $"--out {other} is a LoRA adapter folder");
        CollectionAssert.AreEquivalent(new[] { PeftAdapterFolder.ConfigFileName, PeftAdapterFolder.WeightsFileName },
            Directory.GetFiles(other).Select(Path.GetFileName).ToArray(), "the adapter folder is unchanged");
    }
}
