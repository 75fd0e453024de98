using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class HandBuiltFileTests
{
    [TestMethod]
    public void ReadsAFileBuiltFromTheSpecification()
    {
        using var dir = new TempDirectory();
        // Tensors stored out of name order, a BF16 tensor (1.0 = 0x3F80, -2.0 = 0xC000), metadata, trailing header spaces.
        byte[] data = HandBuiltFiles.Floats(1.5f, -2.25f, 3f, 4f, 5f, 6f)
            .Concat(new byte[] { 0x80, 0x3F, 0x00, 0xC0 }).ToArray();
        string header = """{"z.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"format":"pt"},"a.bias":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]}}    """;
        string path = HandBuiltFiles.Write(dir.File("hand.safetensors"), header, data);

        using var checkpoint = Checkpoint.Open(path);
        CollectionAssert.AreEqual(new[] { "a.bias", "z.weight" }, checkpoint.Tensors.Select(t => t.Name).ToArray());
        Assert.AreEqual("pt", checkpoint.Metadata["format"]);
        Assert.AreEqual(8L, checkpoint.ParameterCount);
        using var w = checkpoint.ReadTensor("z.weight");
        CollectionAssert.AreEqual(new long[] { 2, 3 }, w.shape);
        CollectionAssert.AreEqual(new[] { 1.5f, -2.25f, 3f, 4f, 5f, 6f }, w.data<float>().ToArray());
        using var b = checkpoint.ReadTensor("a.bias");
        CollectionAssert.AreEqual(new[] { 1f, -2f }, b.data<float>().ToArray());
    }
}
