using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class MalformedFileTests
{
    private static string Reject(string headerJson, byte[] data, ulong? declaredLength = null)
    {
        using var dir = new TempDirectory();
        string path = HandBuiltFiles.Write(dir.File("bad.safetensors"), headerJson, data, declaredLength);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(path).Dispose());
        StringAssert.StartsWith(error.Message, path);
        return error.Message;
    }

    private static readonly byte[] Eight = new byte[8];

    [TestMethod]
    public void HeaderLengthBeyondTheFile() =>
        StringAssert.Contains(Reject("{}", Array.Empty<byte>(), declaredLength: 1000), "header length 1000 runs past the end of the file");

    [TestMethod]
    public void HeaderLengthOverTheLimit() =>
        StringAssert.Contains(Reject("{}", Array.Empty<byte>(), declaredLength: 200_000_000), "exceeds the 100000000-byte limit");

    [TestMethod]
    public void FileShorterThanThePrefix()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("tiny.safetensors"), new byte[] { 1, 2, 3 });
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => Checkpoint.Open(dir.File("tiny.safetensors")).Dispose());
        StringAssert.Contains(error.Message, "shorter than the 8-byte header length prefix");
    }

    [TestMethod]
    public void InvalidJson() => StringAssert.Contains(Reject("{\"a\": {", Array.Empty<byte>()), "header is not valid JSON");

    [TestMethod]
    public void UnknownDType()
    {
        string message = Reject("""{"w":{"dtype":"F8_E4M3X","shape":[2],"data_offsets":[0,2]}}""", new byte[2]);
        StringAssert.Contains(message, "tensor 'w'");
        StringAssert.Contains(message, "unknown dtype 'F8_E4M3X'");
    }

    [TestMethod]
    public void OverlappingOffsets()
    {
        string message = Reject("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Eight);
        StringAssert.Contains(message, "overlap tensor 'a'");
    }

    [TestMethod]
    public void GapBetweenTensors()
    {
        string message = Reject("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", new byte[12]);
        StringAssert.Contains(message, "tensor 'b'");
        StringAssert.Contains(message, "gap of 4 bytes after tensor 'a'");
    }

    [TestMethod]
    public void OffsetsPastTheEnd()
    {
        string message = Reject("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", Eight);
        StringAssert.Contains(message, "run past the end of the data section (8 bytes)");
    }

    [TestMethod]
    public void TrailingBytesAfterTheLastTensor() =>
        StringAssert.Contains(Reject("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", Eight), "4 trailing bytes");

    [TestMethod]
    public void ByteCountDiffersFromShape()
    {
        string message = Reject("""{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}""", Eight);
        StringAssert.Contains(message, "hold 8 bytes but shape [3] of F16 needs 6");
    }

    [TestMethod]
    public void ShapeProductOverflows()
    {
        string message = Reject("""{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", Eight);
        StringAssert.Contains(message, "overflows 64 bits");
    }

    [TestMethod]
    public void NegativeDimension() =>
        StringAssert.Contains(Reject("""{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", Eight), "shape entry 0 must be a non-negative integer");

    [TestMethod]
    public void DuplicateTensorName() =>
        StringAssert.Contains(Reject("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Eight), "appears twice");

    [TestMethod]
    public void MetadataMustHoldStrings() =>
        StringAssert.Contains(Reject("""{"__metadata__":{"n":3}}""", Array.Empty<byte>()), "__metadata__ entry 'n' must be a string");
}
