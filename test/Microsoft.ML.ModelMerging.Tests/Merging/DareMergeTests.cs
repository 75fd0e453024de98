using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class DareMergeTests
{
    [TestMethod]
    public void SameSeedGivesTheSameModelWhateverTheTensorOrder()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 20, experts: 3);
        var forward = MergeEach(new DareMerge(0.5, seed: 7, new TaskArithmeticMerge()), model);
        var backward = MergeEach(new DareMerge(0.5, seed: 7, new TaskArithmeticMerge()), [.. model.Reverse()]);

        foreach (var t in model)
        {
            CollectionAssert.AreEqual(ReferenceModel.ToDoubles(forward[t.Name]), ReferenceModel.ToDoubles(backward[t.Name]), t.Name);
        }
    }

    [TestMethod]
    public void MasksDependOnSeedExpertAndTensorName()
    {
        using var scope = NewDisposeScope();
        using var ones = torch.ones(1000);
        var dare = new DareMerge(0.5, seed: 1, new TaskArithmeticMerge());
        var reference = ReferenceModel.ToDoubles(dare.DropAndRescale(ones, 0, "w"));

        CollectionAssert.AreEqual(reference, ReferenceModel.ToDoubles(dare.DropAndRescale(ones, 0, "w")), "same seed, expert and name");
        CollectionAssert.AreNotEqual(reference, ReferenceModel.ToDoubles(new DareMerge(0.5, 2, new TaskArithmeticMerge()).DropAndRescale(ones, 0, "w")), "other seed");
        CollectionAssert.AreNotEqual(reference, ReferenceModel.ToDoubles(dare.DropAndRescale(ones, 1, "w")), "other expert");
        CollectionAssert.AreNotEqual(reference, ReferenceModel.ToDoubles(dare.DropAndRescale(ones, 0, "w2")), "other tensor");
    }

    [TestMethod]
    [DataRow(0.1)]
    [DataRow(0.5)]
    [DataRow(0.9)]
    public void KeepRateIsOneMinusPWithinFiveStandardDeviations(double dropRate)
    {
        using var scope = NewDisposeScope();
        const int count = 200_000;
        using var ones = torch.ones(count);
        var dropped = new DareMerge(dropRate, seed: 3, new TaskArithmeticMerge()).DropAndRescale(ones, 0, "layer.weight");
        double keptFraction = dropped.count_nonzero().item<long>() / (double)count;

        double standardDeviation = Math.Sqrt(dropRate * (1 - dropRate) / count);
        Assert.AreEqual(1 - dropRate, keptFraction, 5 * standardDeviation);
    }

    [TestMethod]
    [DataRow(0.5)]
    [DataRow(0.75)]
    [DataRow(0.3)]
    public void SurvivorsAreRescaledByOneOverOneMinusP(double dropRate)
    {
        using var scope = NewDisposeScope();
        var values = Enumerable.Range(1, 5000).Select(i => (i % 97 - 48) / 16.0 + 1 / 32.0).ToArray();
        using var taskVector = torch.tensor(values, dtype: ScalarType.Float32);
        var dropped = ReferenceModel.ToDoubles(new DareMerge(dropRate, seed: 11, new TaskArithmeticMerge()).DropAndRescale(taskVector, 2, "t"));

        // 1/(1−p) is a power of two for p = 0.5 and 0.75: the rescale must then be exact; otherwise within float32 rounding.
        double tolerance = dropRate == 0.3 ? 1e-6 : 0;
        int kept = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (dropped[i] != 0)
            {
                kept++;
                Assert.AreEqual(values[i] / (1 - dropRate), dropped[i], tolerance * Math.Abs(dropped[i]), $"entry {i}");
            }
        }

        Assert.IsPositive(kept);
    }

    [TestMethod]
    public void ThenTaskArithmeticIsTaskArithmeticOfTheDroppedVectors()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 21, experts: 3);
        var method = MergeMethodRegistry.Default.Create("dare", MergeParameters.Parse("seed=5", "lambda=0.4"));
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        foreach (var (name, expected) in MergeReference.TaskArithmetic(Dropped(model, 0.5, 5), 0.4))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    [DataRow("global")]
    [DataRow("per-tensor")]
    public void ThenTiesIsTiesOfTheDroppedVectors(string trim)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 22, experts: 3);
        var method = (DareMerge)MergeMethodRegistry.Default.Create(
            "dare", MergeParameters.Parse("then=ties", "seed=9", "keep=0.4", $"trim={trim}", "merge-func=mean"));
        Assert.IsInstanceOfType<TiesMerge>(method.Then);
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        var (expected, _) = MergeReference.Ties(Dropped(model, 0.5, 9), 0.3, 0.4, global: trim == "global", mean: true);
        foreach (var (name, values) in expected)
        {
            ReferenceModel.AssertClose(values, result.Merged[name], 1e-6, name);
        }
    }

    /// <summary>
    /// The abort seen at CLIP size (issue 18): a temporary TorchSharp <c>Scalar</c> (implicit conversion of p or 1/(1−p))
    /// is finalised by the GC while the native op that reads it still runs, so libtorch reads a freed scalar ("Unknown
    /// scalar type", or a double free). Several threads drop small task vectors while another one forces collections:
    /// every result must equal the single-threaded one, and nothing may throw.
    /// </summary>
    [TestMethod]
    public void DropIsSafeAndDeterministicOnSeveralThreadsUnderGarbageCollection()
    {
        var dare = new DareMerge(0.3, seed: 4, new TaskArithmeticMerge());
        var values = Enumerable.Range(0, 7).Select(i => (float)((i % 13) - 6) / 8).ToArray();
        double[] expected;
        using (var taskVector = torch.tensor(values))
        using (var dropped = dare.DropAndRescale(taskVector, 1, "blocks.0.weight"))
        {
            expected = ReferenceModel.ToDoubles(dropped);
        }

        using var stop = new CancellationTokenSource();
        var collector = Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(0, GCCollectionMode.Forced, blocking: true);
                // A collection every millisecond still lands inside thousands of drops; back to back, the collections
                // suspend the workers so often on two cores that the test took from 6 s to 7.5 min.
                Thread.Sleep(1);
            }
        }, TaskCreationOptions.LongRunning);
        try
        {
            Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
            {
                for (int repetition = 0; repetition < 20_000; repetition++)
                {
                    using var scope = NewDisposeScope();
                    var taskVector = torch.tensor(values);
                    var dropped = dare.DropAndRescale(taskVector, 1, "blocks.0.weight");
                    CollectionAssert.AreEqual(expected, ReferenceModel.ToDoubles(dropped), $"repetition {repetition}");
                }
            });
        }
        finally
        {
            stop.Cancel();
            collector.Wait();
        }
    }

    /// <summary>τ̃ entry by entry from <see cref="DareMerge.Keeps"/>: kept entries τ/(1−p) in float32, dropped ones 0, past 2^15-entry chunk edges.</summary>
    [TestMethod]
    public void DropFollowsTheMaskOfEveryEntry()
    {
        var dare = new DareMerge(0.3, seed: 12, new TaskArithmeticMerge());
        var values = Enumerable.Range(0, 70_001).Select(i => (float)(((i * 7) % 23) - 11) / 16).ToArray();
        using var taskVector = torch.tensor(values).reshape(70_001, 1);
        using var dropped = dare.DropAndRescale(taskVector, 3, "layers.2.weight");
        var actual = dropped.data<float>().ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            float expected = dare.Keeps(3, "layers.2.weight", i) ? values[i] / (float)(1 - 0.3) : 0f;
            Assert.AreEqual(expected, actual[i], $"entry {i}");
        }
    }

    /// <summary>Seeded determinism: the same bytes on 1 or 3 worker threads, and as the in-memory driver gives.</summary>
    [TestMethod]
    [DataRow("then=task-arithmetic")]
    [DataRow("then=ties")]
    [DataRow("then=ties;trim=per-tensor")]
    public void SameBytesOnAnyNumberOfThreads(string parameters)
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        var g = new Generator(8);
        var baseModel = new Dictionary<string, Tensor> { ["a.weight"] = randn(new long[] { 300, 257 }, generator: g), ["b.bias"] = randn(new long[] { 999 }, generator: g) };
        var experts = Enumerable.Range(0, 3).Select(_ => baseModel.ToDictionary(kv => kv.Key, kv => kv.Value.Plus(randn(kv.Value.shape, generator: g).Times(0.1)))).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseModel);
        var paths = experts.Select((e, i) => { SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), e); return dir.File($"e{i}.safetensors"); }).ToArray();
        var values = MergeParameters.Parse(["seed=4", .. parameters.Split(';')]);
        byte[] Run(int workers)
        {
            var report = new StreamingMergeDriver { WorkerCount = workers }.Merge(MergeMethodRegistry.Default.Create("dare", values),
                dir.File("base.safetensors"), paths, dir.File($"out{workers}.safetensors"));
            using var output = Checkpoint.Open(report.OutputPath);
            return [.. baseModel.Keys.Order(StringComparer.Ordinal).SelectMany(name => output.ReadBytes(name))];
        }

        var one = Run(1);
        CollectionAssert.AreEqual(one, Run(3));
        using var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create("dare", values), baseModel,
            experts.Cast<IReadOnlyDictionary<string, Tensor>>().ToList());
        var memoryBytes = baseModel.Keys.Order(StringComparer.Ordinal)
            .SelectMany(name => inMemory.Merged[name].data<float>().ToArray().SelectMany(BitConverter.GetBytes)).ToArray();
        CollectionAssert.AreEqual(one, memoryBytes);
    }

    /// <summary>The model with every task vector replaced by its DARE drop (p = 0.5 keeps the grid exact).</summary>
    private static ReferenceTensor[] Dropped(ReferenceTensor[] model, double dropRate, long seed)
    {
        var dare = new DareMerge(dropRate, seed, new TaskArithmeticMerge());
        return [.. model.Select(t => t with
        {
            TaskVectors = [.. t.TaskVectors.Select((tau, i) =>
            {
                using var tensor = ReferenceModel.ToTensor(tau, t.Shape);
                using var dropped = dare.DropAndRescale(tensor, i, t.Name);
                return ReferenceModel.ToDoubles(dropped);
            })],
        })];
    }

    /// <summary>Calls the method directly on the tensors in the given order (no statistics passes needed).</summary>
    private static Dictionary<string, Tensor> MergeEach(IMergeMethod method, IReadOnlyList<ReferenceTensor> model)
    {
        method.Begin(model[0].TaskVectors.Length);
        var merged = new Dictionary<string, Tensor>();
        foreach (var t in model)
        {
            var baseTensor = ReferenceModel.ToTensor(t.Base, t.Shape);
            var taskVectors = t.TaskVectors.Select(tau => ReferenceModel.ToTensor(tau, t.Shape)).ToArray();
            using var input = new MergeTensorInput(t.Name, baseTensor, taskVectors);
            merged[t.Name] = method.MergeTensor(input).Merged;
        }

        return merged;
    }
}
