using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// <c>mlmerge compare</c> refuses one pool given twice before comparing anything: it would be compared twice, and its
/// entries would share one label.
/// </summary>
[TestClass]
public sealed class CompareRepeatedPoolTests
{
    [TestMethod]
    public void APoolGivenTwiceIsRefusedBeforeAnyMethodRuns()
    {
        string lora = Path.Combine(CommittedZoo.Default, "lora");
        if (!PoolManifest.Exists(lora)) Assert.Inconclusive("the adapter pools are not committed");
        using var dir = new TempDirectory();
        foreach (string again in new[] { lora, lora + Path.DirectorySeparatorChar })
        {
            var (exit, text, error) = CliRunner.Run("compare", "--zoo", lora, "--zoo", again, "--task", "scenes",
                "--methods", "simple-average", "--no-onnx", "--out", dir.File("out"));
            Assert.AreEqual(1, exit, text);
            StringAssert.Contains(error, "is given twice");
            Assert.DoesNotContain("simple-average", text, "nothing was compared");
            Assert.IsFalse(Directory.Exists(dir.File("out")), "no output directory");
        }
    }
}
