using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class TiesMergeTests
{
    [TestMethod]
    [DataRow("global", "sum", 0.2)]
    [DataRow("global", "mean", 0.2)]
    [DataRow("global", "sum", 0.5)]
    [DataRow("global", "mean", 1.0)]
    [DataRow("per-tensor", "sum", 0.2)]
    [DataRow("per-tensor", "mean", 0.2)]
    [DataRow("per-tensor", "sum", 0.7)]
    public void MatchesReference(string trim, string mergeFunction, double keep)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 10, experts: 4);
        var method = (TiesMerge)MergeMethodRegistry.Default.Create(
            "ties", MergeParameters.Parse($"keep={keep}", $"trim={trim}", $"merge-func={mergeFunction}", "lambda=0.3"));
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        var (expected, thresholds) = MergeReference.Ties(model, 0.3, keep, global: trim == "global", mean: mergeFunction == "mean");
        foreach (var (name, values) in expected)
        {
            ReferenceModel.AssertClose(values, result.Merged[name], 1e-6, name);
        }

        if (trim == "global")
        {
            CollectionAssert.AreEqual(thresholds.Select(t => (float)t).ToArray(), method.GlobalThresholds!.ToArray());
        }
    }

    [TestMethod]
    [DataRow("sum")]
    [DataRow("mean")]
    public void GlobalTrimMatchesReferenceAcrossSlicesOfALargeTensor(string mergeFunction)
    {
        // 600 × 1001 entries: the global path works in chunks of 2^15 entries, the last one partial. Two entries in later
        // slices cancel exactly (γ = 0), so the global majority sign decides them.
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 12, experts: 3, new Dictionary<string, long[]> { ["big"] = [600, 1001], ["small"] = [5] });
        var big = model.Single(t => t.Name == "big");
        foreach (int j in new[] { (1 << 18) + 7, 600_000 })
        {
            big.TaskVectors[0][j] = 0.5;
            big.TaskVectors[1][j] = -0.5;
            big.TaskVectors[2][j] = 0;
        }

        using var result = new InMemoryMergeDriver().Merge(
            MergeMethodRegistry.Default.Create("ties", MergeParameters.Parse($"merge-func={mergeFunction}")),
            ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        var (expected, _) = MergeReference.Ties(model, 0.3, 0.2, global: true, mean: mergeFunction == "mean");
        foreach (var (name, values) in expected)
        {
            ReferenceModel.AssertClose(values, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    [DataRow("sum", false, false)]
    [DataRow("mean", false, false)]
    [DataRow("sum", true, false)]
    [DataRow("mean", true, false)]
    [DataRow("sum", false, true)]
    public void PerTensorTrimOfALargeTensorOnEveryCoreMatchesReferenceAndOneThreadBitForBit(string mergeFunction, bool negativeMajority, bool countingPasses)
    {
        // countingPasses: no room for the sampled bracket's values, so the thresholds come from the two counting passes.
        // 600 × 1001 entries: above the size a per-tensor pass spreads over threads (ranges of whole 2^15-entry chunks, the
        // last partial). Entries that cancel exactly (γ = 0) take the tensor's majority sign: with a negative majority the
        // merge's values for them are patched after the pass that counted the signs.
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 13, experts: 3, new Dictionary<string, long[]> { ["big"] = [600, 1001], ["small"] = [5] });
        var big = model.Single(t => t.Name == "big");
        if (negativeMajority)
            foreach (var row in big.TaskVectors)
                for (int j = 0; j < row.Length; j++) row[j] = -Math.Abs(row[j]);
        foreach (int j in new[] { (1 << 18) + 7, 600_000 })
        {
            big.TaskVectors[0][j] = 0.5;
            big.TaskVectors[1][j] = -0.5;
            big.TaskVectors[2][j] = 0;
        }

        Dictionary<string, Tensor> Run(int workers)
        {
            int saved = ElementwiseTensors.ParallelWorkers;
            ElementwiseTensors.ParallelWorkers = workers;
            try
            {
                var method = new TiesMerge(trim: TiesTrimScope.PerTensor, mergeFunction: mergeFunction == "mean" ? TiesMergeFunction.Mean : TiesMergeFunction.Sum)
                {
                    MaxBracketValues = countingPasses ? 1 : 1 << 24,
                };
                using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));
                return result.Merged.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            }
            finally
            {
                ElementwiseTensors.ParallelWorkers = saved;
            }
        }

        var threaded = Run(workers: 3);
        var single = Run(workers: 1);
        var (expected, _) = MergeReference.Ties(model, 0.3, 0.2, global: false, mean: mergeFunction == "mean");
        foreach (var (name, values) in expected)
        {
            ReferenceModel.AssertClose(values, threaded[name], 1e-6, name);
            Assert.IsTrue(threaded[name].eq(single[name]).all().item<bool>(), $"{name}: threads changed the bits");
        }
    }

    /// <summary>
    /// The streaming driver reads each tensor once into buffers and runs the per-tensor trim there (DARE drops in place
    /// first): against the reference, and the same bits on 1 or 3 readers as the in-memory driver.
    /// </summary>
    [TestMethod]
    [DataRow("ties", "trim=per-tensor")]
    [DataRow("ties", "trim=per-tensor;merge-func=mean;keep=0.3")]
    [DataRow("dare", "then=ties;trim=per-tensor;seed=5")]
    public void PerTensorTrimStreamedMatchesReferenceAndInMemoryBitForBit(string methodName, string parameters)
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 21, experts: 3, new Dictionary<string, long[]> { ["big"] = [700, 999], ["mid"] = [300, 301], ["small"] = [7] });
        var baseModel = ReferenceModel.BaseModel(model);
        var experts = ReferenceModel.Experts(model);
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseModel);
        var paths = experts.Select((e, i) => { SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), e); return dir.File($"e{i}.safetensors"); }).ToArray();
        var values = MergeParameters.Parse(parameters.Split(';'));
        Dictionary<string, Tensor> Streamed(int workers)
        {
            var report = new StreamingMergeDriver { WorkerCount = workers }.Merge(MergeMethodRegistry.Default.Create(methodName, values),
                dir.File("base.safetensors"), paths, dir.File($"out{workers}.safetensors"));
            using var output = Checkpoint.Open(report.OutputPath);
            return baseModel.Keys.ToDictionary(name => name, name => output.ReadTensor(name));
        }

        var one = Streamed(1);
        var three = Streamed(3);
        using var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(methodName, values), baseModel, experts);
        if (methodName == "ties")
        {
            var (expected, _) = MergeReference.Ties(model, 0.3, values.Values.ContainsKey("keep") ? 0.3 : 0.2, global: false, mean: parameters.Contains("mean"));
            foreach (var (name, reference) in expected) ReferenceModel.AssertClose(reference, one[name], 1e-6, name);
        }

        foreach (var name in baseModel.Keys)
        {
            Assert.IsTrue(one[name].eq(three[name]).all().item<bool>(), $"{name}: readers changed the bits");
            Assert.IsTrue(one[name].eq(inMemory.Merged[name]).all().item<bool>(), $"{name}: streamed and in-memory differ");
        }
    }

    [TestMethod]
    public void DefaultsFollowFusionBench()
    {
        var method = (TiesMerge)MergeMethodRegistry.Default.Create("ties");
        Assert.AreEqual(0.3, method.Lambda);
        Assert.AreEqual(0.2, method.Keep);
        Assert.AreEqual(TiesTrimScope.Global, method.Trim);
        Assert.AreEqual(TiesMergeFunction.Sum, method.MergeFunction);
        Assert.AreEqual(5, method.StatisticsPassCount);
        Assert.AreEqual(0, new TiesMerge(trim: TiesTrimScope.PerTensor).StatisticsPassCount);
    }

    [TestMethod]
    public void ZeroElectedSignTakesTheMajorityOfItsScope()
    {
        // Entry 0 of "a" cancels (+0.5 and −0.5, γ = 0). Over the whole model most entries are negative, inside "a"
        // most are positive: the global majority picks −0.5, the per-tensor majority +0.5.
        using var scope = NewDisposeScope();
        ReferenceTensor[] model =
        [
            new("a", [3], [0, 0, 0], [[0.5, 0.25, 0.25], [-0.5, 0.25, 0.25]]),
            new("b", [5], [0, 0, 0, 0, 0], [[-0.25, -0.25, -0.25, -0.25, -0.25], [-0.25, -0.25, -0.25, -0.25, -0.25]]),
        ];

        foreach (var trim in new[] { TiesTrimScope.Global, TiesTrimScope.PerTensor })
        {
            using var result = new InMemoryMergeDriver().Merge(
                new TiesMerge(lambda: 1, keep: 1, trim: trim), ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));
            double expectedEntry0 = trim == TiesTrimScope.Global ? -0.5 : 0.5;
            ReferenceModel.AssertClose([expectedEntry0, 0.5, 0.5], result.Merged["a"], 0, $"a, trim {trim}");

            var (reference, _) = MergeReference.Ties(model, 1, 1, global: trim == TiesTrimScope.Global, mean: false);
            ReferenceModel.AssertClose(reference["a"], result.Merged["a"], 0, $"reference a, trim {trim}");
        }
    }

    [TestMethod]
    public void GlobalThresholdIsExactWhenAllMagnitudesShareTheHighBits()
    {
        // 1 + k·2^-23: one coarse bucket holds every value, so only the refining pass can find the answer.
        using var scope = NewDisposeScope();
        var values = Enumerable.Range(0, 40).Select(k => (1.0 + (k % 17) * Math.Pow(2, -23)) * (k % 3 == 0 ? -1 : 1)).ToArray();
        ReferenceTensor[] model =
        [
            new("first", [25], new double[25], [values[..25]]),
            new("second", [15], new double[15], [values[25..]]),
        ];
        var method = new TiesMerge(keep: 0.3);
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        Assert.AreEqual((float)MergeReference.Threshold(values, 0.3), method.GlobalThresholds![0]);
    }
}
