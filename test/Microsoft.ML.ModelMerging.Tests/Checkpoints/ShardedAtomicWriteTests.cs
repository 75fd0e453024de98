using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>Issue 17 item 2: a sharded write replaces the old checkpoint as a whole, and a reader refuses mixed shards.</summary>
[TestClass]
public sealed class ShardedAtomicWriteTests
{
    private static Dictionary<string, torch.Tensor> Tensors(float value) =>
        Enumerable.Range(0, 4).ToDictionary(i => $"layers.{i}.weight", _ => torch.full(100, value));

    private static CheckpointWriter Start(string path, Dictionary<string, torch.Tensor> tensors, long? shardBytes = 1000)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        return new CheckpointWriter(path, names.Select(n => SafeTensorsWriter.PlanFor(n, tensors[n], SafeTensorsDType.F32)).ToList(), null, shardBytes);
    }

    private static void Write(string path, float value, long? shardBytes = 1000)
    {
        var tensors = Tensors(value);
        using var writer = Start(path, tensors, shardBytes);
        foreach (var name in tensors.Keys.Order(StringComparer.Ordinal)) writer.Write(tensors[name]);
        writer.Complete();
    }

    private static float ValueIn(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        var values = checkpoint.Tensors.Select(t =>
        {
            using var tensor = checkpoint.ReadTensor(t.Name);
            return tensor[0].item<float>();
        }).Distinct().ToList();
        return values.Single();
    }

    [TestMethod]
    public void RewriteReplacesEveryOldShard()
    {
        using var dir = new TempDirectory();
        Write(dir.Path, 1f);
        Write(dir.Path, 2f);
        Assert.AreEqual(2f, ValueIn(dir.Path));
        Assert.HasCount(2, Directory.GetFiles(dir.Path, "*.safetensors"), "the first write's shards are removed");
        Assert.IsEmpty(Directory.GetFiles(dir.Path, "*.partial"));
    }

    [TestMethod]
    public void AbandonedShardedWriteKeepsTheOldCheckpointWhole()
    {
        using var dir = new TempDirectory();
        Write(dir.Path, 1f);
        var before = Directory.GetFiles(dir.Path).Order().ToArray();
        var tensors = Tensors(2f);
        using (var writer = Start(dir.Path, tensors))
        {
            // Three of four tensors: the first shard is finished, the second is not; then the run fails.
            foreach (var name in tensors.Keys.Order(StringComparer.Ordinal).Take(3)) writer.Write(tensors[name]);
        }
        CollectionAssert.AreEqual(before, Directory.GetFiles(dir.Path).Order().ToArray());
        Assert.AreEqual(1f, ValueIn(dir.Path));
    }

    [TestMethod]
    public void FailureWhilePublishingRemovesTheNewShards()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.File(Checkpoint.IndexFileName)); // the index cannot be renamed into place
        var tensors = Tensors(2f);
        using (var writer = Start(dir.Path, tensors))
        {
            foreach (var name in tensors.Keys.Order(StringComparer.Ordinal)) writer.Write(tensors[name]);
            Assert.Throws<IOException>(writer.Complete);
        }
        Assert.IsEmpty(Directory.GetFiles(dir.Path), "no shard and no temporary file is left");
    }

    [TestMethod]
    public void ShardOfAnotherWriteUnderAnIndexedNameIsRefused()
    {
        using var dir = new TempDirectory();
        using var old = new TempDirectory();
        Write(old.Path, 1f);
        Write(dir.Path, 2f);
        // As a non-atomic writer would leave it: the new index, with an old shard under one of the names it lists.
        string oldFirst = Directory.GetFiles(old.Path, "model-00001-*.safetensors").Single();
        string newFirst = Directory.GetFiles(dir.Path, "model-00001-*.safetensors").Single();
        File.Copy(oldFirst, newFirst, overwrite: true);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(dir.Path).Dispose());
        StringAssert.StartsWith(error.Message, newFirst);
        StringAssert.Contains(error.Message, "the shards of different writes are mixed");
    }

    [TestMethod]
    public void SingleFileOutputReplacesAnOlderShardedOne()
    {
        using var dir = new TempDirectory();
        Write(dir.Path, 1f);
        Write(dir.Path, 3f, shardBytes: null);
        CollectionAssert.AreEqual(new[] { "model.safetensors" }, Directory.GetFiles(dir.Path).Select(Path.GetFileName).ToArray());
        Assert.AreEqual(3f, ValueIn(dir.Path));
    }

    [TestMethod]
    public void IndexWithALoneSurrogateIsAFormatError()
    {
        using var dir = new TempDirectory();
        Write(dir.Path, 1f);
        string index = dir.File(Checkpoint.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"layers.0.weight\"", "\"layers.0.weight\\ud800\""));
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(dir.Path).Dispose());
        StringAssert.StartsWith(error.Message, index);
    }
}
