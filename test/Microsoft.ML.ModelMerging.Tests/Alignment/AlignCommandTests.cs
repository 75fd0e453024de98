using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

[TestClass]
public sealed class AlignCommandTests
{
    [TestMethod]
    public void WritesAnAlignedPoolThatLoads()
    {
        using var directory = new TempDirectory();
        string source = AlignmentTestPools.Subset(directory.File("source"), "mnist", "fashion-mnist");
        string output = Path.Combine(directory.Path, "aligned");

        var (exit, stdout, error) = CliRunner.Run("align", "--zoo", source, "--reference", "fashion-mnist", "--seed", "3", "--out", output);

        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(stdout, "fashion-mnist: the reference");
        StringAssert.Matches(stdout, new System.Text.RegularExpressions.Regex(@"mnist: L2 distance to fashion-mnist \d+\.\d+ → \d+\.\d+ \(\d+ iterations?\)"));
        StringAssert.Contains(stdout, "the pool's base is copied unchanged");
        using var aligned = ExpertPool.Load(output);
        var record = aligned.Manifest.Alignment!;
        Assert.AreEqual(("fashion-mnist", PoolAlignment.Method, 3), (record.Reference, record.Method, record.Seed));
        Assert.AreNotEqual(PoolManifest.Read(source).Identity, aligned.Manifest.Identity);
        Assert.IsTrue(File.Exists(Path.Combine(output, PoolManifest.PretrainedFileName)));
        CollectionAssert.AreEqual(new[] { "mnist", "fashion-mnist" }, aligned.TaskNames.ToArray());
        Assert.IsNotNull(aligned.Head("mnist"));

        (exit, _, error) = CliRunner.Run("align", "--zoo", source, "--out", output);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "exists and is not empty");
        (exit, _, error) = CliRunner.Run("align", "--zoo", source, "--out", output, "--force");
        Assert.AreEqual(0, exit, error);
        Assert.AreEqual("mnist", PoolManifest.Read(output).Alignment!.Reference);
    }

    [TestMethod]
    public void RefusesAnUnknownReferenceTask()
    {
        using var directory = new TempDirectory();
        string source = AlignmentTestPools.Subset(directory.File("source"), "mnist", "fashion-mnist");
        string output = Path.Combine(directory.Path, "aligned");

        var (exit, _, error) = CliRunner.Run("align", "--zoo", source, "--reference", "cars", "--out", output);

        Assert.AreEqual(1, exit);
        StringAssert.StartsWith(error, "error: ");
        StringAssert.Contains(error, "no task 'cars' to align to; its tasks: mnist, fashion-mnist");
        Assert.IsFalse(Directory.Exists(output));
    }
}
