using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class UnbufferedFileWriterTests
{
    /// <summary>Pieces of awkward sizes (not block multiples, larger than the staging buffer) land byte for byte, and the length is exact.</summary>
    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void WritesEveryByteInOrderWithTheExactLength(bool unbuffered)
    {
        using var dir = new TempDirectory();
        string path = dir.File("out.bin");
        var random = new Random(7);
        var expected = new MemoryStream();
        using (var writer = new UnbufferedFileWriter(path, unbuffered, stagingBytes: 3 * 4096))
        {
            foreach (int size in new[] { 8, 1, 4095, 4097, 20_000, 3 * 4096, 5, 70_001 })
            {
                var piece = new byte[size];
                random.NextBytes(piece);
                writer.Write(piece);
                expected.Write(piece);
            }

            Assert.AreEqual(expected.Length, writer.Length);
            writer.Complete();
        }

        CollectionAssert.AreEqual(expected.ToArray(), File.ReadAllBytes(path));
    }

    /// <summary>A patch may hit bytes already on disk, bytes still staged, or both at once.</summary>
    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void PatchesBytesOnDiskAndStillStaged(bool unbuffered)
    {
        using var dir = new TempDirectory();
        string path = dir.File("out.bin");
        var data = Enumerable.Range(0, 30_000).Select(i => (byte)(i * 31)).ToArray();
        using (var writer = new UnbufferedFileWriter(path, unbuffered, stagingBytes: 2 * 4096))
        {
            writer.Write(data);
            // 30,000 bytes with an 8 KiB staging buffer: [0, 24576) are on disk, the rest staged.
            long[] offsets = [10, 24_570, 29_990, 100];
            var patch = Enumerable.Range(0, 8 * offsets.Length).Select(i => (byte)(0xE0 + i)).ToArray();
            writer.Patch(offsets, patch);
            for (int k = 0; k < offsets.Length; k++) patch.AsSpan(k * 8, 8).CopyTo(data.AsSpan((int)offsets[k]));

            var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => writer.Patch([29_995], new byte[8]));
            StringAssert.Contains(error.Message, "were not written yet (30000 written)");
            writer.Complete();
        }

        CollectionAssert.AreEqual(data, File.ReadAllBytes(path));
    }

    /// <summary>On Linux the descriptor really carries O_DIRECT when the writer says it bypasses the cache (and the test folder allows it).</summary>
    [TestMethod]
    public void BypassesThePageCacheWhereTheFileSystemAllows()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("O_DIRECT is checked on Linux.");
        using var dir = new TempDirectory();
        string path = dir.File("out.bin");
        using var writer = new UnbufferedFileWriter(path);
        int direct = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture
            is System.Runtime.InteropServices.Architecture.Arm64 ? 0x10000 : 0x4000;
        var descriptors = Directory.GetFiles("/proc/self/fd")
            .Where(fd => string.Equals(new FileInfo(fd).LinkTarget, path, StringComparison.Ordinal)).ToList();
        Assert.AreEqual(1, descriptors.Count, "the writer's descriptor");
        string flagsLine = File.ReadAllLines($"/proc/self/fdinfo/{Path.GetFileName(descriptors[0])}").Single(l => l.StartsWith("flags:", StringComparison.Ordinal));
        int flags = Convert.ToInt32(flagsLine["flags:".Length..].Trim(), 8);
        Assert.AreEqual(writer.IsUnbuffered, (flags & direct) != 0, flagsLine);
        var mountType = File.ReadAllLines("/proc/self/mounts").Select(l => l.Split(' '))
            .Where(f => dir.Path.StartsWith(f[1], StringComparison.Ordinal)).OrderByDescending(f => f[1].Length).First()[2];
        if (mountType is "ext4" or "xfs" or "btrfs") Assert.IsTrue(writer.IsUnbuffered, $"a {mountType} file should be written unbuffered");
    }
}
