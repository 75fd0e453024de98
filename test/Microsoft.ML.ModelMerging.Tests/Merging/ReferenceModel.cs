using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

/// <summary>One tensor of a test model as plain doubles: θ0 and every expert's task vector.</summary>
internal sealed record ReferenceTensor(string Name, long[] Shape, double[] Base, double[][] TaskVectors)
{
    public int Length => Base.Length;
}

/// <summary>
/// Random test models on a coarse binary grid (multiples of 1/256, |x| &lt; 2): float32 holds every value, θ_i − θ0
/// and sums of a few of them exactly, so the float64 references see the very numbers the float32 code sees, and
/// magnitudes repeat (ties) and include exact zeros.
/// </summary>
internal static class ReferenceModel
{
    public static readonly IReadOnlyDictionary<string, long[]> DefaultShapes = new Dictionary<string, long[]>
    {
        ["blocks.0.attn.weight"] = [6, 5],
        ["blocks.0.bias"] = [7],
        ["blocks.1.mlp.weight"] = [3, 4, 2],
        ["norm.scale"] = [],
    };

    /// <summary>Tensors sorted by name; τ entries are j/256 with |j| ≤ 40, a fraction of them exactly 0.</summary>
    public static ReferenceTensor[] Create(int seed, int experts, IReadOnlyDictionary<string, long[]>? shapes = null, double zeroFraction = 0.2)
    {
        var random = new Random(seed);
        var tensors = new List<ReferenceTensor>();
        foreach (var (name, shape) in (shapes ?? DefaultShapes).OrderBy(pair => pair.Key, StringComparer.Ordinal))
        {
            int length = (int)shape.Aggregate(1L, (product, size) => product * size);
            var baseValues = Enumerable.Range(0, length).Select(_ => random.Next(-64, 65) / 64.0).ToArray();
            var taskVectors = Enumerable.Range(0, experts)
                .Select(_ => Enumerable.Range(0, length)
                    .Select(_ => random.NextDouble() < zeroFraction ? 0.0 : random.Next(-40, 41) / 256.0)
                    .ToArray())
                .ToArray();
            tensors.Add(new ReferenceTensor(name, shape, baseValues, taskVectors));
        }

        return [.. tensors];
    }

    public static Dictionary<string, Tensor> BaseModel(IEnumerable<ReferenceTensor> model, ScalarType dtype = ScalarType.Float32) =>
        model.ToDictionary(t => t.Name, t => ToTensor(t.Base, t.Shape, dtype));

    /// <summary>θ_i = θ0 + τ_i for every expert (exact on the grid).</summary>
    public static List<IReadOnlyDictionary<string, Tensor>> Experts(IReadOnlyList<ReferenceTensor> model, ScalarType dtype = ScalarType.Float32)
    {
        int experts = model[0].TaskVectors.Length;
        return [.. Enumerable.Range(0, experts).Select(i => (IReadOnlyDictionary<string, Tensor>)model.ToDictionary(
            t => t.Name,
            t => ToTensor([.. t.Base.Zip(t.TaskVectors[i], (b, tau) => b + tau)], t.Shape, dtype)))];
    }

    public static Tensor ToTensor(double[] values, long[] shape, ScalarType dtype = ScalarType.Float32)
    {
        using var flat = torch.tensor(values, dtype: ScalarType.Float64);
        using var shaped = flat.reshape(shape);
        return shaped.to_type(dtype, copy: true);
    }

    public static double[] ToDoubles(Tensor tensor)
    {
        using var cpu = tensor.cpu();
        using var asDouble = cpu.to_type(ScalarType.Float64, copy: true);
        using var flat = asDouble.flatten();
        return flat.data<double>().ToArray();
    }

    public static void AssertClose(double[] expected, Tensor actual, double tolerance, string what)
    {
        var values = ToDoubles(actual);
        Assert.HasCount(expected.Length, values, what);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], values[i], tolerance, $"{what}, entry {i}");
        }
    }

    public static void DisposeAll(IEnumerable<Tensor> tensors)
    {
        foreach (var tensor in tensors)
        {
            tensor.Dispose();
        }
    }

    public static void DisposeAll(Dictionary<string, Tensor> model) => DisposeAll(model.Values);

    public static void DisposeAll(IEnumerable<IReadOnlyDictionary<string, Tensor>> models)
    {
        foreach (var model in models)
        {
            DisposeAll(model.Values);
        }
    }
}
