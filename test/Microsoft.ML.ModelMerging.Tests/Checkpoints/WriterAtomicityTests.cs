using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class WriterAtomicityTests
{
    private static readonly TensorSpec[] Plan =
    {
        new("a", SafeTensorsDType.F32, new long[] { 4 }),
        new("b", SafeTensorsDType.F32, new long[] { 4 }),
    };

    [TestMethod]
    public void InterruptedWriteLeavesNoFile()
    {
        using var dir = new TempDirectory();
        string target = dir.File("out.safetensors");
        using (var writer = new SafeTensorsWriter(target, Plan))
        {
            using var a = torch.ones(4);
            writer.Write(a);
            // abandoned before "b" and before Complete: as if the run was cancelled
        }
        Assert.AreEqual(0, Directory.GetFileSystemEntries(dir.Path).Length);
    }

    [TestMethod]
    public void FailedWriteKeepsTheOlderFileIntact()
    {
        using var dir = new TempDirectory();
        string target = dir.File("out.safetensors");
        File.WriteAllText(target, "previous result");
        var writer = new SafeTensorsWriter(target, Plan);
        using (writer)
        {
            using var wrong = torch.ones(5);
            var error = Assert.ThrowsExactly<ArgumentException>(() => writer.Write(wrong));
            StringAssert.Contains(error.Message, "tensor 'a' has shape [5], planned [4]");
            var incomplete = Assert.ThrowsExactly<InvalidOperationException>(writer.Complete);
            StringAssert.Contains(incomplete.Message, "2 planned tensors were not written (next: 'a')");
        }
        Assert.AreEqual("previous result", File.ReadAllText(target));
        CollectionAssert.AreEqual(new[] { target }, Directory.GetFileSystemEntries(dir.Path));
    }

    [TestMethod]
    public void InterruptedShardedWriteLeavesNoFile()
    {
        using var dir = new TempDirectory();
        var plan = Enumerable.Range(0, 4).Select(i => new TensorSpec($"t{i}", SafeTensorsDType.F32, new long[] { 10 })).ToList();
        using (var writer = new CheckpointWriter(dir.Path, plan, maxShardBytes: 40))
        {
            using var t = torch.zeros(10);
            writer.Write(t);
            writer.Write(t);
            writer.Write(t);
        }
        Assert.AreEqual(0, Directory.GetFileSystemEntries(dir.Path).Length);
    }
}
