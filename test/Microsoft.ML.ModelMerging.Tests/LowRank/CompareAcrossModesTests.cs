using System.Globalization;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary><c>mlmerge compare</c> over pools of different modes (LoRA and L-LoRA experts of one zoo), ranked side by side.</summary>
[TestClass]
public sealed class CompareAcrossModesTests
{
    [TestMethod]
    public void PoolsOfDifferentModesAreRankedTogetherEachNormalisedByItsOwnExperts()
    {
        string lora = Path.Combine(CommittedZoo.Default, "lora"), linearized = Path.Combine(CommittedZoo.Default, "l-lora");
        if (!PoolManifest.Exists(lora) || !PoolManifest.Exists(linearized)) Assert.Inconclusive("the adapter pools are not committed");
        using var dir = new TempDirectory();
        var (exit, text, error) = CliRunner.Run("compare", "--zoo", lora, "--zoo", linearized, "--task", "scenes", "--task", "textures",
            "--methods", "simple-average", "--no-onnx", "--out", dir.Path);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "simple-average @lora");
        StringAssert.Contains(text, "simple-average @l-lora");

        string csv = File.ReadAllText(dir.File("leaderboard.csv"));
        var rows = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(r => r.Split(',')).ToList();
        Assert.HasCount(2, rows);
        CollectionAssert.AreEqual(new[] { "1", "2" }, rows.Select(r => r[0]).ToArray(), "one ranking over both pools");
        foreach (var (pool, label) in new[] { (lora, "lora"), (linearized, "l-lora") })
        {
            var row = rows.Single(r => r[1] == $"simple-average @{label}");
            var manifest = PoolManifest.Read(pool);
            double scenes = double.Parse(row[7], CultureInfo.InvariantCulture), textures = double.Parse(row[8], CultureInfo.InvariantCulture);
            double normalized = (scenes / manifest.Task("scenes").Individual.Test + textures / manifest.Task("textures").Individual.Test) / 2;
            Assert.AreEqual(normalized, double.Parse(row[5], CultureInfo.InvariantCulture), 1e-4, $"{label}: normalised by its own experts");
            Assert.IsTrue(File.Exists(Path.Combine(dir.Path, label, "leaderboard.csv")), "each pool's own leaderboard is kept");
        }

        string report = File.ReadAllText(dir.File("report.md"));
        StringAssert.Contains(report, "Pool `lora`:");
        StringAssert.Contains(report, "Pool `l-lora`:");

        (exit, _, error) = CliRunner.Run("compare", "--zoo", lora, "--zoo", CommittedZoo.Far, "--methods", "simple-average", "--out", dir.File("mismatch"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "compare pools of the same tasks side by side");
    }
}
