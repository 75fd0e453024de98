using System.Text;
using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>Issue 17 item 4: every malformed header gives CheckpointFormatException naming the file (and the tensor when known).</summary>
[TestClass]
public sealed class StrictHeaderTests
{
    private static CheckpointFormatException Reject(byte[] header, int dataBytes)
    {
        using var dir = new TempDirectory();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. new byte[dataBytes]]);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(path).Dispose());
        StringAssert.StartsWith(error.Message, path);
        return error;
    }

    private static CheckpointFormatException Reject(string header, int dataBytes) => Reject(Encoding.UTF8.GetBytes(header), dataBytes);

    [TestMethod]
    public void InvalidUtf8InATensorName()
    {
        byte[] header = [.. "{\""u8, 0xC3, 0x28, .. "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"u8];
        StringAssert.Contains(Reject(header, 4).Message, "not valid UTF-8");
    }

    [TestMethod]
    public void InvalidUtf8InMetadata()
    {
        byte[] header = [.. "{\"__metadata__\":{\"k\":\""u8, 0xFF, .. "\"}}"u8];
        StringAssert.Contains(Reject(header, 0).Message, "not valid UTF-8");
    }

    [TestMethod]
    public void EscapedLoneSurrogateInAName() =>
        StringAssert.Contains(Reject("""{"a\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4).Message, "lone surrogate");

    [TestMethod]
    public void EscapedLoneSurrogateInTheDTypeNamesTheTensor()
    {
        var error = Reject("""{"w":{"dtype":"F3\udc00","shape":[1],"data_offsets":[0,4]}}""", 4);
        Assert.AreEqual("w", error.TensorName);
        StringAssert.Contains(error.Message, "dtype is not valid Unicode");
    }

    [TestMethod]
    public void EscapedLoneSurrogateInMetadata() =>
        StringAssert.Contains(Reject("""{"__metadata__":{"k":"\ud800x"}}""", 0).Message, "__metadata__ entry 'k'");

    [TestMethod]
    public void DuplicatedFieldInsideATensorEntry()
    {
        var error = Reject("""{"w":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}""", 4);
        Assert.AreEqual("w", error.TensorName);
        StringAssert.Contains(error.Message, "field 'shape' appears twice");
    }

    [TestMethod]
    public void UnknownFieldInsideATensorEntry() =>
        StringAssert.Contains(Reject("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"stride":[1]}}""", 4).Message, "unknown field 'stride'");

    [TestMethod]
    public void DuplicatedMetadataKey() =>
        StringAssert.Contains(Reject("""{"__metadata__":{"k":"a","k":"b"}}""", 0).Message, "'k' appears twice");

    [TestMethod]
    public void ZeroSizeTensorWhoseOtherDimensionsOverflow()
    {
        // 0 elements, so the byte count is 0 and the offsets agree, but libtorch would abort computing its strides.
        var error = Reject("""{"w":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}}""", 0);
        Assert.AreEqual("w", error.TensorName);
        StringAssert.Contains(error.Message, "byte count overflows 64 bits");
    }

    [TestMethod]
    [DataRow("-1")]
    [DataRow("1.0")]
    [DataRow("1e0")]
    [DataRow("-0")]
    [DataRow("9223372036854775808")]
    public void ShapeEntriesArePlainNonNegativeIntegers(string dim) =>
        StringAssert.Contains(Reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[" + dim + "],\"data_offsets\":[0,1]}}", 1).Message, "shape entry 0");

    [TestMethod]
    [DataRow("[0,-4]")]
    [DataRow("[0,4.0]")]
    [DataRow("[0,18446744073709551616]")]
    public void OffsetsArePlainNonNegativeIntegers(string offsets) =>
        StringAssert.Contains(Reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" + offsets + "}}", 4).Message, "data_offsets");

    [TestMethod]
    public void DeepNestingIsAFormatError() =>
        StringAssert.Contains(Reject("{\"w\":" + new string('[', 5000) + new string(']', 5000) + "}", 0).Message, "not valid JSON");

    [TestMethod]
    public void EmptyTensorWithSaneShapeStillReads()
    {
        using var dir = new TempDirectory();
        string path = HandBuiltFiles.Write(dir.File("ok.safetensors"), """{"w":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}""", []);
        using var checkpoint = Checkpoint.Open(path);
        using var tensor = checkpoint.ReadTensor("w");
        CollectionAssert.AreEqual(new long[] { 0, 3 }, tensor.shape);
    }
}
