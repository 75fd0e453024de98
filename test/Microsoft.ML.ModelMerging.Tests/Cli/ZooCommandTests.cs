using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Tests.Cli;

/// <summary><c>mlmerge zoo build</c>'s recipe variants that change the backbone.</summary>
[TestClass]
public sealed class ZooCommandTests
{
    /// <summary>
    /// <c>--width</c> pre-trains a backbone of that width (MLP four times as wide), recorded in the pool and in the
    /// checkpoints; a width the heads do not divide is refused before any work.
    /// </summary>
    [TestMethod]
    public void WidthBuildsAWiderBackboneAndRefusesOneTheHeadsDoNotDivide()
    {
        using var dir = new TempDirectory();
        var (exit, _, error) = CliRunner.Run("zoo", "build", "--recipe", "smoke", "--width", "48", "--task", "scenes", "--out", dir.File("zoo"));
        Assert.AreEqual(0, exit, error);
        var manifest = PoolManifest.Read(dir.File("zoo"));
        Assert.AreEqual(48, manifest.ModelConfig.Width);
        Assert.AreEqual(192, manifest.ModelConfig.MlpSize);
        var stored = ModelCheckpoints.ReadConfig(Path.Combine(dir.File("zoo"), manifest.Pretrained!));
        Assert.AreEqual(48, stored.Width);
        Assert.AreEqual(192, stored.MlpSize);

        (exit, _, error) = CliRunner.Run("zoo", "build", "--recipe", "smoke", "--width", "50", "--task", "scenes", "--out", dir.File("odd"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "--width 50 must be a positive multiple of the recipe's 4 attention heads");
        Assert.IsFalse(Directory.Exists(dir.File("odd")), "nothing written");
    }
}
