using Microsoft.ML.ModelMerging.Benchmarks.Fuzzing;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>
/// Issue 17's fuzzer, a few thousand files: every mutated file is either read exactly as the independent reference
/// parse reads it, or refused with CheckpointFormatException naming the file; nothing else, and nothing hangs.
/// </summary>
[TestClass]
public sealed class SafeTensorsFuzzTests
{
    [TestMethod]
    public void MutatedFilesAreReadExactlyOrRefusedWithTheDocumentedException()
    {
        using var dir = new TempDirectory();
        // The per-file limit only catches a read that never returns; it is far above any read's time (well under 1 s).
        var report = SafeTensorsFuzzer.Run(files: 4000, seed: 17, dir.Path, perFileLimit: TimeSpan.FromMinutes(2));
        Assert.IsEmpty(report.Defects, report.Describe());
        Assert.AreEqual(4000, report.Accepted + report.Rejected);
        Assert.IsGreaterThan(0, report.Accepted, "valid files are among them");
        Assert.IsGreaterThan(report.Accepted, report.Rejected, "most mutations break the file");
    }

    [TestMethod]
    public void FileSeedsAreTheSameInEveryProcess()
    {
        // Fixed values: a run's files (and the defects it reports) must reproduce in another process.
        Assert.AreEqual(SafeTensorsFuzzer.FileSeed(17, 0), SafeTensorsFuzzer.FileSeed(17, 0));
        Assert.AreEqual(571_703_939, SafeTensorsFuzzer.FileSeed(17, 0)); // SplitMix64 finaliser, computed independently
        Assert.AreNotEqual(SafeTensorsFuzzer.FileSeed(17, 0), SafeTensorsFuzzer.FileSeed(17, 1));
        Assert.AreNotEqual(SafeTensorsFuzzer.FileSeed(17, 0), SafeTensorsFuzzer.FileSeed(18, 0));
    }

    [TestMethod]
    public void ReferenceParseAcceptsAValidFileAndRejectsItsBreakages()
    {
        byte[] header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"u8.ToArray();
        byte[] file = [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. new byte[8]];
        var parsed = ReferenceSafeTensorsParser.Parse(file);
        Assert.IsNotNull(parsed);
        Assert.AreEqual("w", parsed.Tensors.Single().Name);
        Assert.IsNull(ReferenceSafeTensorsParser.Parse(file[..^1]), "truncated");
        Assert.IsNull(ReferenceSafeTensorsParser.Parse([.. file, 0]), "trailing byte");
    }
}
