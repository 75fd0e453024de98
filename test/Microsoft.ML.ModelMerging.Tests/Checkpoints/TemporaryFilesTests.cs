using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>Issue 17 item 5: temporary files carry their writer's pid; a later write removes those of dead processes only.</summary>
[TestClass]
public sealed class TemporaryFilesTests
{
    /// <summary>A pid no process has: above the kernel's pid_max (at most 2^22 on Linux).</summary>
    private const int DeadPid = 99_999_999;

    private static string Stale(TempDirectory dir, string target, int pid)
    {
        string path = dir.File($".{target}.{pid}.{Guid.NewGuid():N}.partial");
        File.WriteAllBytes(path, new byte[64]);
        return path;
    }

    [TestMethod]
    public void TemporaryNameCarriesTheProcessId()
    {
        using var dir = new TempDirectory();
        string temp = TemporaryFiles.For(dir.File("out.safetensors"));
        StringAssert.StartsWith(Path.GetFileName(temp), $".out.safetensors.{Environment.ProcessId}.");
        StringAssert.EndsWith(temp, ".partial");
    }

    [TestMethod]
    public void NextWriteRemovesStaleFilesOfItsOutputOnly()
    {
        using var dir = new TempDirectory();
        string dead = Stale(dir, "out.safetensors", DeadPid);
        string live = Stale(dir, "out.safetensors", Environment.ProcessId);
        string otherOutput = Stale(dir, "other.safetensors", DeadPid);
        string foreign = dir.File(".out.safetensors.notes.partial");
        File.WriteAllText(foreign, "not ours");

        using (var a = torch.ones(2)) SafeTensorsWriter.Save(dir.File("out.safetensors"), new Dictionary<string, torch.Tensor> { ["a"] = a });

        Assert.IsFalse(File.Exists(dead), "left by a process that is gone");
        Assert.IsTrue(File.Exists(live), "a live process may still be writing it");
        Assert.IsTrue(File.Exists(otherOutput), "another output's file is not this write's business");
        Assert.IsTrue(File.Exists(foreign), "a name the writer does not make is left alone");
    }

    [TestMethod]
    public void ShardedWriteRemovesStaleShardAndIndexFiles()
    {
        using var dir = new TempDirectory();
        string shard = Stale(dir, "model-00001-of-00002-0123456789ab.safetensors", DeadPid);
        string index = Stale(dir, Checkpoint.IndexFileName, DeadPid);
        using (var a = torch.ones(100))
        using (var b = torch.ones(100))
        using (var writer = new CheckpointWriter(dir.Path, [new("a", SafeTensorsDType.F32, [100]), new("b", SafeTensorsDType.F32, [100])], null, 400))
        {
            writer.Write(a);
            writer.Write(b);
            writer.Complete();
        }
        Assert.IsFalse(File.Exists(shard));
        Assert.IsFalse(File.Exists(index));
        Assert.IsEmpty(Directory.GetFiles(dir.Path, "*.partial"));
    }
}
