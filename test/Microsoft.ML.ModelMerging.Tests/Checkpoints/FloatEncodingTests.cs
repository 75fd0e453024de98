using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

[TestClass]
public sealed class FloatEncodingTests
{
    /// <summary>
    /// Values that stress rounding: random normals over many scales, exact ties between two half/bfloat16 values,
    /// subnormals, overflow to infinity, signed zeros and infinities. (NaN is checked apart: libtorch's own conversions
    /// disagree on its payload bits.)
    /// </summary>
    private static float[] HardValues()
    {
        var random = new Random(3);
        var values = new List<float>();
        for (int i = 0; i < 20_000; i++) values.Add((float)(random.NextDouble() * 2 - 1) * MathF.Pow(2, random.Next(-30, 20)));
        for (int i = 0; i < 2_000; i++)
        {
            uint bits = (uint)random.Next(0, 0x7F7F) << 16;
            values.Add(BitConverter.UInt32BitsToSingle(bits | 0x8000)); // exactly halfway between two bfloat16 values
            values.Add(BitConverter.UInt32BitsToSingle(bits | 0x1000)); // halfway between two halves, for some exponents
        }

        values.AddRange([0f, -0f, 1e-8f, -6e-8f, 3e-5f, 65504f, 65520f, 70000f, float.MaxValue, float.Epsilon,
            float.PositiveInfinity, float.NegativeInfinity]);
        return [.. values];
    }

    [TestMethod]
    [DataRow(SafeTensorsDType.F32)]
    [DataRow(SafeTensorsDType.F16)]
    [DataRow(SafeTensorsDType.BF16)]
    [DataRow(SafeTensorsDType.F64)]
    public void EncodesAsTorchConvertsBitForBit(SafeTensorsDType dtype)
    {
        var values = HardValues();
        var encoded = new byte[values.Length * dtype.ElementSize()];
        FloatEncoding.Encode(values, dtype, encoded);

        using var scope = torch.NewDisposeScope();
        var expected = torch.tensor(values).to_type(dtype.ToScalarType()).contiguous().bytes.ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            int size = dtype.ElementSize();
            var got = encoded.AsSpan(i * size, size);
            var want = expected.AsSpan(i * size, size);
            if (!got.SequenceEqual(want))
                Assert.Fail($"value {values[i]:R} (bits 0x{BitConverter.SingleToUInt32Bits(values[i]):X8}) as {dtype}: " +
                            $"got {Convert.ToHexString(got)}, torch {Convert.ToHexString(want)}");
        }
    }

    [TestMethod]
    [DataRow(SafeTensorsDType.F16)]
    [DataRow(SafeTensorsDType.BF16)]
    [DataRow(SafeTensorsDType.F64)]
    public void DecodesAsTorchConvertsBitForBit(SafeTensorsDType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var stored = torch.tensor(HardValues()).to_type(dtype.ToScalarType()).contiguous();
        var decoded = new float[stored.NumberOfElements];
        FloatEncoding.Decode(stored.bytes, dtype, decoded);
        var expected = stored.to_type(torch.ScalarType.Float32).data<float>().ToArray();
        CollectionAssert.AreEqual(expected.Select(BitConverter.SingleToUInt32Bits).ToArray(), decoded.Select(BitConverter.SingleToUInt32Bits).ToArray());
    }

    [TestMethod]
    [DataRow(SafeTensorsDType.F16)]
    [DataRow(SafeTensorsDType.BF16)]
    [DataRow(SafeTensorsDType.F64)]
    public void NaNStaysNaNBothWays(SafeTensorsDType dtype)
    {
        float[] nans = [float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F80_0001), BitConverter.UInt32BitsToSingle(0x7F9D_8000)];
        var encoded = new byte[nans.Length * dtype.ElementSize()];
        FloatEncoding.Encode(nans, dtype, encoded);
        var decoded = new float[nans.Length];
        FloatEncoding.Decode(encoded, dtype, decoded);
        Assert.IsTrue(decoded.All(float.IsNaN), string.Join(", ", decoded.Select(v => $"0x{BitConverter.SingleToUInt32Bits(v):X8}")));
    }
}
