using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

/// <summary>
/// TALL masks and EMR against a plain per-entry float32 reference written from the formulas (DESIGN §3, the methods'
/// remarks): the merged weights, the shared task vector and every mask bit for bit, in memory and streamed with several
/// worker counts, on tensors spanning several chunks with a ragged tail, exact cancellations (elected sign 0), zeros
/// and products that underflow.
/// </summary>
[TestClass]
public sealed class TaskSpecificBitEqualityTests
{
    private static readonly (string Name, long[] Shape)[] Shapes =
    [
        ("blocks.0.weight", [3, 33_001]), // 99,003 entries: four chunks of 2^15, the last one ragged
        ("blocks.1.bias", [5]),
        ("blocks.2.weight", [40_000]),
    ];

    private sealed record Reference(float[] Merged, float[] Shared, bool[][] Masks);

    /// <summary>θ0 and θ_i: random, except that where θ0 is 0 the task vectors are chosen (τ_i = θ_i exactly).</summary>
    private static (float[] Base, float[][] Experts) Values(int seed, long count, int experts)
    {
        var random = new Random(seed);
        float Normal(double scale) => (float)(scale * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        var theta0 = new float[count];
        var thetas = Enumerable.Range(0, experts).Select(_ => new float[count]).ToArray();
        for (long j = 0; j < count; j++)
        {
            switch (j % 17)
            {
                case 3: // τ_1 = −τ_0, the rest 0: Σ τ is exactly 0
                    thetas[0][j] = Normal(0.01);
                    if (experts > 1) thetas[1][j] = -thetas[0][j];
                    break;
                case 5: // tiny values: τ_t·τ_uni underflows to 0 for some of them
                    for (int e = 0; e < experts; e++) thetas[e][j] = (random.Next(3) - 1) * (float)(1e-24 * (1 + random.NextDouble()));
                    break;
                case 7: // every τ is 0
                    break;
                case 11: // equal magnitudes, mixed signs
                    for (int e = 0; e < experts; e++) thetas[e][j] = random.Next(2) == 0 ? 0.25f : -0.25f;
                    break;
                default:
                    theta0[j] = Normal(1);
                    for (int e = 0; e < experts; e++) thetas[e][j] = theta0[j] + Normal(0.01);
                    break;
            }
        }

        return (theta0, thetas);
    }

    private static float[][] TaskVectors(float[] theta0, float[][] thetas) =>
        [.. thetas.Select(theta => theta.Select((value, j) => value - theta0[j]).ToArray())];

    private static float Sum(float[][] tau, long j)
    {
        float sum = tau[0][j];
        for (int e = 1; e < tau.Length; e++) sum += tau[e][j];
        return sum;
    }

    private static Reference Tall(float[] theta0, float[][] tau, float lambda, float[] tallLambdas)
    {
        int n = theta0.Length;
        var reference = new Reference(new float[n], new float[n], [.. tau.Select(_ => new bool[n])]);
        for (int j = 0; j < n; j++)
        {
            float multiTask = Sum(tau, j);
            reference.Shared[j] = multiTask;
            reference.Merged[j] = theta0[j] + (multiTask * lambda);
            for (int e = 0; e < tau.Length; e++) reference.Masks[e][j] = Math.Abs(tau[e][j]) >= Math.Abs(multiTask - tau[e][j]) * tallLambdas[e];
        }

        return reference;
    }

    private static Reference Emr(float[] theta0, float[][] tau)
    {
        int n = theta0.Length;
        var reference = new Reference(new float[n], new float[n], [.. tau.Select(_ => new bool[n])]);
        for (int j = 0; j < n; j++)
        {
            float sum = Sum(tau, j);
            float sign = sum > 0 ? 1f : sum < 0 ? -1f : 0f;
            float largest = 0;
            for (int e = 0; e < tau.Length; e++) if (tau[e][j] * sign > 0) largest = Math.Max(largest, Math.Abs(tau[e][j]));
            float unified = sign * largest;
            reference.Shared[j] = unified;
            reference.Merged[j] = theta0[j] + unified;
            for (int e = 0; e < tau.Length; e++) reference.Masks[e][j] = tau[e][j] * unified > 0;
        }

        return reference;
    }

    /// <summary>λ_t = Σ|τ_t| / Σ|M_t ⊙ τ_uni| over the whole model, in float64.</summary>
    private static double[] EmrScales(IEnumerable<(float[][] Tau, Reference Reference)> tensors, int experts)
    {
        var task = new double[experts];
        var masked = new double[experts];
        foreach (var (tau, reference) in tensors)
        {
            for (int e = 0; e < experts; e++)
            {
                for (int j = 0; j < tau[e].Length; j++)
                {
                    task[e] += Math.Abs(tau[e][j]);
                    if (reference.Masks[e][j]) masked[e] += Math.Abs(reference.Shared[j]);
                }
            }
        }

        return [.. task.Zip(masked, (t, m) => m > 0 ? t / m : 1.0)];
    }

    private static void AssertBits(float[] expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int j = 0; j < expected.Length; j++)
        {
            if (BitConverter.SingleToInt32Bits(expected[j]) != BitConverter.SingleToInt32Bits(actual[j]))
                Assert.Fail($"{what}: entry {j} is {actual[j]:R}, expected {expected[j]:R}.");
        }
    }

    private static void AssertMask(bool[] expected, Tensor actual, string what)
    {
        Assert.AreEqual(ScalarType.Bool, actual.dtype, what);
        var values = actual.flatten().data<bool>().ToArray();
        for (int j = 0; j < expected.Length; j++)
        {
            if (expected[j] != values[j]) Assert.Fail($"{what}: entry {j} is {values[j]}, expected {expected[j]}.");
        }
    }

    [TestMethod]
    [DataRow("tall-masks", 2, 1)]
    [DataRow("tall-masks", 3, 2)]
    [DataRow("tall-masks", 8, 3)]
    [DataRow("tall-masks", 9, 2)]
    [DataRow("emr", 2, 1)]
    [DataRow("emr", 3, 2)]
    [DataRow("emr", 8, 3)]
    [DataRow("emr", 9, 2)]
    public void MatchThePerEntryReferenceInMemoryAndStreamed(string method, int experts, int workers)
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        float lambda = 0.3f;
        float[] tallLambdas = [.. Enumerable.Range(0, experts).Select(e => 0.2f + (0.05f * e))];
        string parameters = method == "tall-masks"
            ? "tall-lambda=" + string.Join(",", tallLambdas.Select(l => ((double)l).ToString("R", System.Globalization.CultureInfo.InvariantCulture)))
            : "";
        var baseModel = new Dictionary<string, Tensor>();
        var expertModels = Enumerable.Range(0, experts).Select(_ => new Dictionary<string, Tensor>()).ToList();
        var references = new List<(float[][] Tau, Reference Reference)>();
        for (int t = 0; t < Shapes.Length; t++)
        {
            var (name, shape) = Shapes[t];
            var (theta0, thetas) = Values(100 * experts + t, shape.Aggregate(1L, (a, b) => a * b), experts);
            baseModel[name] = tensor(theta0, shape);
            for (int e = 0; e < experts; e++) expertModels[e][name] = tensor(thetas[e], shape);
            var tau = TaskVectors(theta0, thetas);
            references.Add((tau, method == "tall-masks" ? Tall(theta0, tau, lambda, tallLambdas) : Emr(theta0, tau)));
        }

        double[] scales = method == "emr" ? EmrScales(references, experts) : [.. Enumerable.Repeat(1.0, experts)];
        IMergeMethod Create() => MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries)));

        using var inMemory = new InMemoryMergeDriver().Merge(Create(), baseModel, expertModels.Cast<IReadOnlyDictionary<string, Tensor>>().ToList());
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseModel);
        for (int e = 0; e < experts; e++) SafeTensorsWriter.Save(dir.File($"e{e}.safetensors"), expertModels[e]);
        // Two workers: a sharded output, so EMR's scales are overwritten in shards already finished.
        bool sharded = workers == 2;
        var report = new StreamingMergeDriver { WorkerCount = workers }.Merge(Create(), dir.File("base.safetensors"),
            [.. Enumerable.Range(0, experts).Select(e => dir.File($"e{e}.safetensors"))], dir.File(sharded ? "out" : "out.safetensors"),
            new StreamingMergeOptions { MaxShardBytes = sharded ? 150_000 : null });
        Assert.AreEqual(1, report.Passes, "one read of the inputs (EMR gathers λ_t while merging)");
        using var output = Checkpoint.Open(report.OutputPath);
        if (sharded) Assert.IsGreaterThan(1, output.Files.Count);

        for (int t = 0; t < Shapes.Length; t++)
        {
            string name = Shapes[t].Name;
            var reference = references[t].Reference;
            var parts = inMemory.TaskSpecific[name];
            AssertBits(reference.Merged, inMemory.Merged[name].flatten().data<float>().ToArray(), $"{name} merged (in memory)");
            AssertBits(reference.Shared, parts.SharedTaskVector.flatten().data<float>().ToArray(), $"{name} shared task vector (in memory)");
            using var streamedMerged = output.ReadTensor(name);
            using var streamedShared = output.ReadTensor(StreamingMergeDriver.TaskSpecificPrefix + name + ".task_vector");
            AssertBits(reference.Merged, streamedMerged.flatten().data<float>().ToArray(), $"{name} merged (streamed)");
            AssertBits(reference.Shared, streamedShared.flatten().data<float>().ToArray(), $"{name} shared task vector (streamed)");
            using var streamedScales = output.ReadTensor(StreamingMergeDriver.TaskSpecificPrefix + name + ".scales");
            var storedScales = streamedScales.data<float>().ToArray();
            for (int e = 0; e < experts; e++)
            {
                AssertMask(reference.Masks[e], parts.Masks[e], $"{name} mask {e} (in memory)");
                using var streamedMask = output.ReadTensor(StreamingMergeDriver.TaskSpecificPrefix + name + $".mask.{e}");
                AssertMask(reference.Masks[e], streamedMask, $"{name} mask {e} (streamed)");
                // λ_t is a float64 sum over the model: its order may differ from the reference's in the last bits only.
                Assert.AreEqual(scales[e], parts.Scales[e], 1e-12 * Math.Abs(scales[e]), $"{name} scale {e}");
                Assert.AreEqual((float)scales[e], storedScales[e], $"{name} stored scale {e}");
            }
        }
    }
}
