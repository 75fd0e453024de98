using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class SafeTensorsRoundTripTests
{
    /// <summary>Random bit patterns of the given width, with NaN/Inf excluded (their payloads need not survive conversion).</summary>
    private static byte[] FiniteBits(int count, SafeTensorsDType dtype, int seed)
    {
        var random = new Random(seed);
        int size = dtype.ElementSize();
        var bytes = new byte[count * size];
        for (int i = 0; i < count; i++)
        {
            while (true)
            {
                random.NextBytes(bytes.AsSpan(i * size, size));
                bool finite = dtype switch
                {
                    SafeTensorsDType.F32 => float.IsFinite(BitConverter.ToSingle(bytes, i * size)),
                    SafeTensorsDType.F16 => Half.IsFinite(BitConverter.ToHalf(bytes, i * size)),
                    SafeTensorsDType.BF16 => float.IsFinite(BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes, i * size) << 16)),
                    _ => true,
                };
                if (finite) break;
            }
        }
        return bytes;
    }

    /// <summary>Independent decoding of stored floats: BF16 is the top half of a float32, F16 goes through System.Half.</summary>
    private static float[] Decode(byte[] bytes, SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F32 => Enumerable.Range(0, bytes.Length / 4).Select(i => BitConverter.ToSingle(bytes, i * 4)).ToArray(),
        SafeTensorsDType.F16 => Enumerable.Range(0, bytes.Length / 2).Select(i => (float)BitConverter.ToHalf(bytes, i * 2)).ToArray(),
        SafeTensorsDType.BF16 => Enumerable.Range(0, bytes.Length / 2).Select(i => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes, i * 2) << 16)).ToArray(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    [TestMethod]
    [DataRow(SafeTensorsDType.F32)]
    [DataRow(SafeTensorsDType.F16)]
    [DataRow(SafeTensorsDType.BF16)]
    public void FloatTensorsRoundTripBitExactThroughFloat32(SafeTensorsDType dtype)
    {
        using var dir = new TempDirectory();
        var shape = new long[] { 7, 13, 5 };
        byte[] original = FiniteBits(7 * 13 * 5, dtype, seed: (int)dtype + 1);
        var spec = new TensorSpec("w", dtype, shape);
        using (var writer = new SafeTensorsWriter(dir.File("a.safetensors"), new[] { spec }))
        {
            writer.WriteBytes(original);
            writer.Complete();
        }

        using var a = Checkpoint.Open(dir.File("a.safetensors"));
        using var asFloat = a.ReadTensor("w");
        Assert.AreEqual(torch.ScalarType.Float32, asFloat.dtype);
        CollectionAssert.AreEqual(shape, asFloat.shape);
        CollectionAssert.AreEqual(Decode(original, dtype), asFloat.data<float>().ToArray());

        // Writing the float32 values back in the stored dtype reproduces the original bytes.
        SafeTensorsWriter.Save(dir.File("b.safetensors"), new Dictionary<string, torch.Tensor> { ["w"] = asFloat }, floatType: dtype);
        using var b = Checkpoint.Open(dir.File("b.safetensors"));
        Assert.AreEqual(dtype, b.GetEntry("w").DType);
        CollectionAssert.AreEqual(original, b.ReadBytes("w"));
    }

    [TestMethod]
    public void IntegerTensorsPassThroughUntouchedAndMetadataIsKept()
    {
        using var dir = new TempDirectory();
        using var ids = torch.arange(0L, 50L).reshape(1, 50);
        using var small = torch.tensor(new int[] { -5, 7, int.MaxValue });
        using var bytes = torch.tensor(new byte[] { 0, 1, 255 });
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["mlmerge.note"] = "ünïcode ✓" };
        SafeTensorsWriter.Save(dir.File("m.safetensors"),
            new Dictionary<string, torch.Tensor> { ["position_ids"] = ids, ["counts"] = small, ["mask"] = bytes }, metadata, SafeTensorsDType.F16);

        using var checkpoint = Checkpoint.Open(dir.File("m.safetensors"));
        Assert.AreEqual(SafeTensorsDType.I64, checkpoint.GetEntry("position_ids").DType);
        Assert.AreEqual(SafeTensorsDType.I32, checkpoint.GetEntry("counts").DType);
        Assert.AreEqual(SafeTensorsDType.U8, checkpoint.GetEntry("mask").DType);
        using var readIds = checkpoint.ReadTensor("position_ids");
        Assert.AreEqual(torch.ScalarType.Int64, readIds.dtype);
        CollectionAssert.AreEqual(Enumerable.Range(0, 50).Select(i => (long)i).ToArray(), readIds.data<long>().ToArray());
        using var readCounts = checkpoint.ReadTensor("counts");
        CollectionAssert.AreEqual(new[] { -5, 7, int.MaxValue }, readCounts.data<int>().ToArray());
        Assert.AreEqual("pt", checkpoint.Metadata["format"]);
        Assert.AreEqual("ünïcode ✓", checkpoint.Metadata["mlmerge.note"]);
        CollectionAssert.AreEqual(new[] { "counts", "mask", "position_ids" }, checkpoint.Tensors.Select(t => t.Name).ToArray());
    }

    [TestMethod]
    public void SameTensorsGiveTheSameBytes()
    {
        using var dir = new TempDirectory();
        using var t = torch.linspace(-1, 1, 100).reshape(10, 10);
        var tensors = new Dictionary<string, torch.Tensor> { ["b"] = t, ["a"] = t };
        var metadata = new Dictionary<string, string> { ["z"] = "1", ["a"] = "2" };
        SafeTensorsWriter.Save(dir.File("1.safetensors"), tensors, metadata);
        SafeTensorsWriter.Save(dir.File("2.safetensors"), tensors.Reverse().ToDictionary(), metadata.Reverse().ToDictionary());
        CollectionAssert.AreEqual(File.ReadAllBytes(dir.File("1.safetensors")), File.ReadAllBytes(dir.File("2.safetensors")));
    }

    [TestMethod]
    public void EmptyAndScalarTensorsAreSupported()
    {
        using var dir = new TempDirectory();
        using var empty = torch.zeros(0, 4);
        using var scalar = torch.tensor(3.5f);
        SafeTensorsWriter.Save(dir.File("e.safetensors"), new Dictionary<string, torch.Tensor> { ["empty"] = empty, ["scalar"] = scalar });
        using var checkpoint = Checkpoint.Open(dir.File("e.safetensors"));
        using var e = checkpoint.ReadTensor("empty");
        CollectionAssert.AreEqual(new long[] { 0, 4 }, e.shape);
        using var s = checkpoint.ReadTensor("scalar");
        Assert.AreEqual(0, s.shape.Length);
        Assert.AreEqual(3.5f, s.item<float>());
    }
}
