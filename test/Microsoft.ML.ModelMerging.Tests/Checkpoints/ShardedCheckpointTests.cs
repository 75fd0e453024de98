using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class ShardedCheckpointTests
{
    private static Dictionary<string, torch.Tensor> Tensors(int count, int size)
    {
        torch.manual_seed(3);
        return Enumerable.Range(0, count).ToDictionary(i => $"layers.{i}.weight", _ => torch.randn(size));
    }

    private static void WriteSharded(string path, Dictionary<string, torch.Tensor> tensors, long shardBytes)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        using var writer = new CheckpointWriter(path, names.Select(n => SafeTensorsWriter.PlanFor(n, tensors[n], SafeTensorsDType.F32)).ToList(),
            new Dictionary<string, string> { ["mlmerge.method"] = "test" }, shardBytes);
        foreach (var n in names) writer.Write(tensors[n]);
        writer.Complete();
    }

    [TestMethod]
    public void ShardedOutputReadsBackAsOneCheckpoint()
    {
        using var dir = new TempDirectory();
        var tensors = Tensors(5, 100); // 400 bytes each, 2 per 1000-byte shard → 3 shards
        WriteSharded(dir.Path, tensors, shardBytes: 1000);

        var shards = Directory.GetFiles(dir.Path, "*.safetensors").Select(Path.GetFileName).Order().ToArray();
        Assert.HasCount(3, shards);
        for (int i = 0; i < 3; i++) StringAssert.StartsWith(shards[i], $"model-0000{i + 1}-of-00003-");
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, "*.partial").Length);

        using var index = JsonDocument.Parse(File.ReadAllText(dir.File(Checkpoint.IndexFileName)));
        Assert.AreEqual(2000, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());

        foreach (var path in new[] { dir.Path, dir.File(Checkpoint.IndexFileName) })
        {
            using var checkpoint = Checkpoint.Open(path);
            Assert.AreEqual(3, checkpoint.Files.Count);
            Assert.AreEqual(5, checkpoint.Tensors.Count);
            Assert.AreEqual("test", checkpoint.Metadata["mlmerge.method"]);
            foreach (var (name, expected) in tensors)
            {
                using var actual = checkpoint.ReadTensor(name);
                CollectionAssert.AreEqual(expected.data<float>().ToArray(), actual.data<float>().ToArray(), name);
            }
        }
    }

    [TestMethod]
    public void SmallOutputUnderTheLimitIsOneFile()
    {
        using var dir = new TempDirectory();
        WriteSharded(dir.Path, Tensors(2, 10), shardBytes: 1 << 20);
        CollectionAssert.AreEqual(new[] { "model.safetensors" }, Directory.GetFiles(dir.Path).Select(Path.GetFileName).ToArray());
    }

    [TestMethod]
    public void IndexNamingAMissingShardIsRejected()
    {
        using var dir = new TempDirectory();
        WriteSharded(dir.Path, Tensors(5, 100), shardBytes: 1000);
        string second = Directory.GetFiles(dir.Path, "model-00002-of-00003-*.safetensors").Single();
        File.Delete(second);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(dir.Path).Dispose());
        StringAssert.Contains(error.Message, $"shard '{Path.GetFileName(second)}' listed in weight_map does not exist");
    }

    [TestMethod]
    public void IndexMappingATensorToTheWrongShardIsRejected()
    {
        using var dir = new TempDirectory();
        WriteSharded(dir.Path, Tensors(5, 100), shardBytes: 1000);
        string indexPath = dir.File(Checkpoint.IndexFileName);
        string first = Path.GetFileName(Directory.GetFiles(dir.Path, "model-00001-of-00003-*.safetensors").Single());
        string third = Path.GetFileName(Directory.GetFiles(dir.Path, "model-00003-of-00003-*.safetensors").Single());
        File.WriteAllText(indexPath, File.ReadAllText(indexPath).Replace(
            $"\"layers.0.weight\": \"{first}\"", $"\"layers.0.weight\": \"{third}\""));
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(dir.Path).Dispose());
        StringAssert.Contains(error.Message, "tensor 'layers.0.weight'");
    }

    [TestMethod]
    public void SizesParse()
    {
        Assert.AreEqual(5_000_000_000L, CheckpointWriter.ParseSize("5GB"));
        Assert.AreEqual(500L << 20, CheckpointWriter.ParseSize("500MiB"));
        Assert.AreEqual(1234L, CheckpointWriter.ParseSize("1234"));
        Assert.ThrowsExactly<ArgumentException>(() => CheckpointWriter.ParseSize("lots"));
    }

    /// <summary>Hugging Face's units (transformers' convert_file_size_to_int): KB, MB, GB are powers of 10, KiB, MiB, GiB powers of 2.</summary>
    [TestMethod]
    [DataRow("100MB", 100_000_000L)]
    [DataRow("100MiB", 104_857_600L)]
    [DataRow("100mib", 104_857_600L)]
    [DataRow("1KB", 1_000L)]
    [DataRow("1KiB", 1_024L)]
    [DataRow("2GB", 2_000_000_000L)]
    [DataRow("2GiB", 2_147_483_648L)]
    [DataRow("1TB", 1_000_000_000_000L)]
    [DataRow("1.5MB", 1_500_000L)]
    [DataRow(" 7B ", 7L)]
    public void SizesFollowHuggingFaceUnits(string text, long bytes) => Assert.AreEqual(bytes, CheckpointWriter.ParseSize(text));

    [TestMethod]
    [DataRow("100Mb")]
    [DataRow("5gb")]
    [DataRow("0MB")]
    [DataRow("-1GB")]
    [DataRow("MB")]
    public void AmbiguousOrEmptySizesAreRefused(string text) =>
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => CheckpointWriter.ParseSize(text)).Message, $"'{text}'");
}
