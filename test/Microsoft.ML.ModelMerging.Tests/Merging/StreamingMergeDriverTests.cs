using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class StreamingMergeDriverTests
{
    /// <summary>A base and three experts with a few float tensors, an integer tensor and a per-model head.</summary>
    private static (string Base, string[] Experts, Dictionary<string, Tensor> BaseTensors, List<Dictionary<string, Tensor>> ExpertTensors)
        WriteModels(TempDirectory dir)
    {
        var g = new Generator(42);
        Dictionary<string, Tensor> Model(Dictionary<string, Tensor>? from)
        {
            var shapes = new Dictionary<string, long[]>
            {
                ["blocks.0.weight"] = new long[] { 16, 8 }, ["blocks.0.bias"] = new long[] { 16 },
                ["blocks.1.weight"] = new long[] { 8, 16 }, ["embed"] = new long[] { 5, 8 }, ["head.weight"] = new long[] { 3, 8 },
                ["logit_scale"] = Array.Empty<long>(),
            };
            var model = shapes.ToDictionary(kv => kv.Key, kv => from is null ? randn(kv.Value, generator: g) : from[kv.Key].Plus(randn(kv.Value, generator: g).Times(0.1)));
            model["position_ids"] = arange(0L, 5L);
            return model;
        }
        var baseTensors = Model(null);
        var experts = Enumerable.Range(0, 3).Select(_ => Model(baseTensors)).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseTensors, new Dictionary<string, string> { ["mlmerge.vit_config"] = "{}" });
        for (int i = 0; i < experts.Count; i++) SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), experts[i]);
        return (dir.File("base.safetensors"), Enumerable.Range(0, 3).Select(i => dir.File($"e{i}.safetensors")).ToArray(), baseTensors, experts);
    }

    [TestMethod]
    [DataRow("simple-average", "")]
    [DataRow("task-arithmetic", "lambda=0.3")]
    [DataRow("ties", "keep=0.2")]
    [DataRow("ties", "keep=0.5;trim=per-tensor;merge-func=mean")]
    [DataRow("dare", "drop-rate=0.3;seed=7;then=ties")]
    [DataRow("tall-masks", "")]
    [DataRow("consensus", "min-tasks=2")]
    [DataRow("emr", "")]
    public void StreamingEqualsInMemoryBitForBit(string method, string parameters)
    {
        using var dir = new TempDirectory();
        var (basePath, expertPaths, baseTensors, experts) = WriteModels(dir);
        var values = MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries));
        var weights = new[] { 1.0, 0.5, 2.0 };

        var report = new StreamingMergeDriver().Merge(MergeMethodRegistry.Default.Create(method, values), basePath, expertPaths,
            dir.File("out.safetensors"), new StreamingMergeOptions { ExpertWeights = weights });
        var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(method, values),
            baseTensors, experts.Cast<IReadOnlyDictionary<string, Tensor>>().ToList(), weights);

        using var output = Checkpoint.Open(report.OutputPath);
        foreach (var name in baseTensors.Keys)
        {
            using var streamed = output.ReadTensor(name);
            var expected = inMemory.Merged[name];
            Assert.AreEqual(expected.dtype, streamed.dtype, name);
            CollectionAssert.AreEqual(expected.cpu().bytes.ToArray(), streamed.bytes.ToArray(), $"{method} {name}");
        }
        // Excluded tensors come from the base untouched.
        using (var head = output.ReadTensor("head.weight"))
            CollectionAssert.AreEqual(baseTensors["head.weight"].data<float>().ToArray(), head.data<float>().ToArray());
        Assert.AreEqual(method, output.Metadata[StreamingMergeDriver.MethodMetadataKey]);
        Assert.AreEqual("{}", output.Metadata["mlmerge.vit_config"], "the base's metadata is kept");
        StringAssert.Contains(output.Metadata[StreamingMergeDriver.InputsMetadataKey], "header_sha256");

        if (inMemory.TaskSpecific.Count > 0)
        {
            foreach (var (name, parts) in inMemory.TaskSpecific)
            {
                for (int t = 0; t < parts.TaskCount; t++)
                {
                    using var mask = output.ReadTensor(StreamingMergeDriver.TaskSpecificPrefix + name + $".mask.{t}");
                    CollectionAssert.AreEqual(parts.Masks[t].data<bool>().ToArray(), mask.data<bool>().ToArray());
                }
                using var scales = output.ReadTensor(StreamingMergeDriver.TaskSpecificPrefix + name + ".scales");
                CollectionAssert.AreEqual(parts.Scales.Select(s => (float)s).ToArray(), scales.data<float>().ToArray());
            }
        }
    }

    [TestMethod]
    public void ShardedAndBf16OutputsHoldTheSameMerge()
    {
        using var dir = new TempDirectory();
        var (basePath, expertPaths, _, _) = WriteModels(dir);
        var driver = new StreamingMergeDriver();
        var single = driver.Merge(MergeMethodRegistry.Default.Create("task-arithmetic"), basePath, expertPaths, dir.File("single.safetensors"));
        var sharded = driver.Merge(MergeMethodRegistry.Default.Create("task-arithmetic"), basePath, expertPaths, dir.File("sharded"),
            new StreamingMergeOptions { MaxShardBytes = 600, OutputDType = SafeTensorsDType.BF16 });
        using var a = Checkpoint.Open(single.OutputPath);
        using var b = Checkpoint.Open(sharded.OutputPath);
        Assert.IsGreaterThan(1, b.Files.Count);
        Assert.AreEqual(SafeTensorsDType.BF16, b.GetEntry("blocks.0.weight").DType);
        Assert.AreEqual(SafeTensorsDType.I64, b.GetEntry("position_ids").DType);
        foreach (var entry in a.Tensors.Where(t => t.DType == SafeTensorsDType.F32))
        {
            using var full = a.ReadTensor(entry.Name);
            using var rounded = b.ReadTensor(entry.Name);
            using var expected = full.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(expected.data<float>().ToArray(), rounded.data<float>().ToArray(), entry.Name);
        }
    }

    private static void AssertRejected(TempDirectory dir, string basePath, string[] experts, string expectedFragment, bool allowMissing = false)
    {
        var error = Assert.ThrowsExactly<MergeInputException>(() => new StreamingMergeDriver().Merge(
            MergeMethodRegistry.Default.Create("ties"), basePath, experts, dir.File("out.safetensors"), new StreamingMergeOptions { AllowMissing = allowMissing }));
        StringAssert.Contains(error.Message, expectedFragment);
        Assert.IsFalse(File.Exists(dir.File("out.safetensors")), "nothing is written on error");
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, "*.partial").Length);
    }

    [TestMethod]
    public void MissingTensorIsNamedWithItsFiles()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteModels(dir);
        SafeTensorsWriter.Save(experts[1], expertTensors[1].Where(kv => kv.Key != "blocks.1.weight").ToDictionary());
        AssertRejected(dir, basePath, experts, $"Tensor 'blocks.1.weight' (shape [8, 16]) is missing from expert 1 ('{experts[1]}').");
        // --allow-missing treats the expert as unchanged there.
        var report = new StreamingMergeDriver().Merge(MergeMethodRegistry.Default.Create("ties"), basePath, experts,
            dir.File("out.safetensors"), new StreamingMergeOptions { AllowMissing = true });
        Assert.IsTrue(File.Exists(report.OutputPath));
    }

    /// <summary>
    /// FusionBench's layout (issue 18): a CLIPModel base holds a text tower that the CLIPVisionModel experts lack. With
    /// allow-missing those tensors are copied from the base and enter no statistic, so the merge equals, bit for bit, the
    /// merge with them excluded by name, for every method (TIES's model-wide trim would otherwise count their zeros).
    /// </summary>
    [TestMethod]
    [DataRow("ties", "keep=0.2")]
    [DataRow("ties", "keep=0.3;trim=per-tensor")]
    [DataRow("dare", "drop-rate=0.3;seed=3;then=ties;keep=0.25")]
    [DataRow("task-arithmetic", "")]
    [DataRow("tall-masks", "")]
    public void TensorsNoExpertHoldsAreLeftOutOfStatistics(string method, string parameters)
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, _) = WriteModels(dir);
        var g = new Generator(5);
        var withText = new Dictionary<string, Tensor>(baseTensors)
        {
            ["text_model.encoder.weight"] = randn(new long[] { 48, 48 }, generator: g), // 2304 entries, more than the vision part
            ["text_model.embeddings.weight"] = randn(new long[] { 40, 8 }, generator: g),
        };
        string clipBase = dir.File("clip-base.safetensors");
        SafeTensorsWriter.Save(clipBase, withText, new Dictionary<string, string> { ["mlmerge.vit_config"] = "{}" });
        var values = MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries));

        var missing = new StreamingMergeDriver().Merge(MergeMethodRegistry.Default.Create(method, values), clipBase, experts,
            dir.File("missing.safetensors"), new StreamingMergeOptions { AllowMissing = true });
        var excluded = new StreamingMergeDriver(new TensorFilter(["^text_model\\."])).Merge(MergeMethodRegistry.Default.Create(method, values),
            clipBase, experts, dir.File("excluded.safetensors"));

        CollectionAssert.AreEquivalent(excluded.MergedTensors.ToList(), missing.MergedTensors.ToList());
        using var a = Checkpoint.Open(missing.OutputPath);
        using var b = Checkpoint.Open(excluded.OutputPath);
        foreach (var entry in b.Tensors)
            CollectionAssert.AreEqual(b.ReadBytes(entry.Name), a.ReadBytes(entry.Name), entry.Name);
        foreach (var name in withText.Keys.Where(n => n.StartsWith("text_model.", StringComparison.Ordinal)))
        {
            using var stored = a.ReadTensor(name);
            CollectionAssert.AreEqual(withText[name].data<float>().ToArray(), stored.data<float>().ToArray(), $"{name} is the base's");
        }
    }

    /// <summary>
    /// An expert lacking one tensor: TIES's model-wide threshold of that task is the exact rank over the entries it holds,
    /// computed here independently (all |τ| of the task sorted in float64), not over zeros standing in for the missing tensor.
    /// </summary>
    [TestMethod]
    [DataRow("ties")]
    [DataRow("dare")]
    public void ExpertLackingATensorIsTrimmedOverItsOwnEntries(string method)
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, expertTensors) = WriteModels(dir);
        SafeTensorsWriter.Save(experts[1], expertTensors[1].Where(kv => kv.Key != "blocks.1.weight").ToDictionary());
        var values = MergeParameters.Parse(method == "dare" ? ["keep=0.3", "then=ties", "drop-rate=0"] : ["keep=0.3"]);
        var merge = MergeMethodRegistry.Default.Create(method, values);
        var ties = (TiesMerge)(merge is DareMerge dare ? dare.Then : merge);
        var report = new StreamingMergeDriver().Merge(merge, basePath, experts, dir.File("out.safetensors"), new StreamingMergeOptions { AllowMissing = true });

        for (int e = 0; e < experts.Length; e++)
        {
            var magnitudes = report.MergedTensors
                .Where(name => e != 1 || name != "blocks.1.weight")
                .SelectMany(name =>
                {
                    using var tau = expertTensors[e][name].to_type(ScalarType.Float32) - baseTensors[name].to_type(ScalarType.Float32);
                    return tau.reshape(-1).data<float>().ToArray().Select(v => (double)Math.Abs(v));
                })
                .OrderByDescending(v => v)
                .ToArray();
            long rank = MagnitudePruning.ThresholdRank(magnitudes.Length, 0.3);
            Assert.AreEqual(magnitudes[rank - 1], ties.GlobalThresholds![e], 0, $"expert {e}");
        }
    }

    [TestMethod]
    public void ExtraTensorIsRejectedUnlessExcluded()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteModels(dir);
        using var extra = zeros(4);
        SafeTensorsWriter.Save(experts[2], new Dictionary<string, Tensor>(expertTensors[2]) { ["adapter.weight"] = extra });
        AssertRejected(dir, basePath, experts, $"Tensor 'adapter.weight' of expert 2 ('{experts[2]}') is not in the base model");
    }

    [TestMethod]
    public void ShapeMismatchIsNamed()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteModels(dir);
        using var wrong = zeros(16, 9);
        SafeTensorsWriter.Save(experts[0], new Dictionary<string, Tensor>(expertTensors[0]) { ["blocks.0.weight"] = wrong });
        AssertRejected(dir, basePath, experts, $"Tensor 'blocks.0.weight': expert 0 ('{experts[0]}') has shape [16, 9], expected the base model's [16, 8].");
    }

    [TestMethod]
    public void IntegerExpertTensorIsNamedWithItsFile()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteModels(dir);
        using var integer = zeros(16, dtype: ScalarType.Int32);
        SafeTensorsWriter.Save(experts[0], new Dictionary<string, Tensor>(expertTensors[0]) { ["blocks.0.bias"] = integer });
        AssertRejected(dir, basePath, experts, $"Tensor 'blocks.0.bias': expert 0 ('{experts[0]}') has dtype Int32 but the base model's is Float32.");
    }

    [TestMethod]
    public void ExpertsStoredInAnotherFloatingDTypeMergeLikeInMemory()
    {
        // Fine-tunes are often saved in half precision next to a float32 base: both drivers merge them in float32.
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, expertTensors) = WriteModels(dir);
        SafeTensorsWriter.Save(experts[0], expertTensors[0], floatType: SafeTensorsDType.F16);
        SafeTensorsWriter.Save(experts[2], expertTensors[2], floatType: SafeTensorsDType.BF16);
        var halves = expertTensors.Select((model, i) => (IReadOnlyDictionary<string, Tensor>)model.ToDictionary(
            kv => kv.Key, kv => i == 1 || !kv.Value.is_floating_point() ? kv.Value : kv.Value.to_type(i == 0 ? ScalarType.Float16 : ScalarType.BFloat16))).ToList();

        var report = new StreamingMergeDriver().Merge(MergeMethodRegistry.Default.Create("ties"), basePath, experts, dir.File("out.safetensors"));
        var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create("ties"), baseTensors, halves);
        using var output = Checkpoint.Open(report.OutputPath);
        foreach (var name in baseTensors.Keys)
        {
            using var streamed = output.ReadTensor(name);
            CollectionAssert.AreEqual(inMemory.Merged[name].bytes.ToArray(), streamed.bytes.ToArray(), name);
        }
    }

    [TestMethod]
    public void NaNInAnExpertIsNamed()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteModels(dir);
        var poisoned = expertTensors[1]["embed"].clone();
        poisoned[2, 3] = float.NaN;
        SafeTensorsWriter.Save(experts[1], new Dictionary<string, Tensor>(expertTensors[1]) { ["embed"] = poisoned });
        AssertRejected(dir, basePath, experts, "'embed'");
        AssertRejected(dir, basePath, experts, experts[1]);
    }

    [TestMethod]
    public void NaNInTheBaseIsNamedWithItsFile()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, _) = WriteModels(dir);
        var poisoned = baseTensors["blocks.1.weight"].clone();
        poisoned[7, 15] = float.NegativeInfinity;
        SafeTensorsWriter.Save(basePath, new Dictionary<string, Tensor>(baseTensors) { ["blocks.1.weight"] = poisoned });
        AssertRejected(dir, basePath, experts, $"Tensor 'blocks.1.weight': the base model contains 1 NaN or infinite value(s). (file {basePath})");
    }

    /// <summary>A tensor of 1501 × 999 float32 (≈ 6 MB): read in several pieces, with a length that is no multiple of a SIMD vector.</summary>
    private static (string Base, string[] Experts, Dictionary<string, Tensor> BaseTensors, List<Dictionary<string, Tensor>> ExpertTensors)
        WriteLargeModels(TempDirectory dir)
    {
        var g = new Generator(3);
        var baseTensors = new Dictionary<string, Tensor> { ["big"] = randn(1501, 999, generator: g), ["small"] = randn(3, generator: g) };
        var experts = Enumerable.Range(0, 2).Select(_ => baseTensors.ToDictionary(kv => kv.Key, kv => kv.Value.Plus((randn(kv.Value.shape, generator: g).Times(0.01))))).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseTensors);
        for (int i = 0; i < experts.Count; i++) SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), experts[i]);
        return (dir.File("base.safetensors"), [dir.File("e0.safetensors"), dir.File("e1.safetensors")], baseTensors, experts);
    }

    [TestMethod]
    public void TensorsLargerThanOneReadPieceMatchInMemory()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, expertTensors) = WriteLargeModels(dir);
        // Elementwise methods are cut into chunks shared among threads: any number of threads gives the same bytes.
        foreach (var (method, parameters) in new[] { ("task-arithmetic", ""), ("ties", ""), ("ties", "merge-func=mean") })
        {
            var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries))), baseTensors,
                expertTensors.Cast<IReadOnlyDictionary<string, Tensor>>().ToList(), [0.5, 1.5]);
            foreach (int workers in new[] { 1, 3 })
            {
                var report = new StreamingMergeDriver { WorkerCount = workers }.Merge(MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries))),
                    basePath, experts, dir.File($"{method}-{workers}.safetensors"), new StreamingMergeOptions { ExpertWeights = [0.5, 1.5] });
                using var output = Checkpoint.Open(report.OutputPath);
                foreach (string name in baseTensors.Keys)
                {
                    using var streamed = output.ReadTensor(name);
                    CollectionAssert.AreEqual(inMemory.Merged[name].bytes.ToArray(), streamed.bytes.ToArray(), $"{method} {parameters} {workers} {name}");
                }
            }
        }
    }

    /// <summary>
    /// TIES's global thresholds from a sample of 30 or 8 chunks (of 46) and one full pass, the bracket counted per bit pattern
    /// or its values kept: the thresholds equal a full sort of every |τ_i|, the output equals the in-memory merge bit for
    /// bit, and the inputs are read twice. With no room for the bracketed values the counting passes run instead (4 reads)
    /// and give the same bytes.
    /// </summary>
    [TestMethod]
    public void SampledBracketGivesTheExactThresholdsInTwoReads()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, expertTensors) = WriteLargeModels(dir);
        const double keep = 0.2;
        double[] weights = [0.5, 1.5]; // expert weights scale τ before it is sampled, bracketed and counted
        var expected = expertTensors.Select((e, i) =>
        {
            var magnitudes = baseTensors.Keys.SelectMany(name =>
            {
                using var tau = (e[name] - baseTensors[name]).Times(weights[i]);
                return tau.abs().flatten().data<float>().ToArray();
            }).OrderByDescending(v => v).ToArray();
            return magnitudes[MagnitudePruning.ThresholdRank(magnitudes.Length, keep) - 1];
        }).ToArray();
        var inMemory = new InMemoryMergeDriver().Merge(new TiesMerge(keep: keep), baseTensors, expertTensors.Cast<IReadOnlyDictionary<string, Tensor>>().ToList(), weights);

        foreach (var (run, method, reads) in new[]
                 {
                     ("bracket counted per bit pattern", new TiesMerge(keep: keep) { SampledChunkCount = 30 }, 2),
                     ("bracket values kept", new TiesMerge(keep: keep) { SampledChunkCount = 8, MaxCountedBracketPatterns = 0 }, 2),
                     ("counting passes", new TiesMerge(keep: keep) { SampledChunkCount = 8, MaxCountedBracketPatterns = 0, MaxBracketValues = 10 }, 4),
                 })
        {
            var report = new StreamingMergeDriver().Merge(method, basePath, experts, dir.File($"{run.Replace(' ', '-')}.safetensors"),
                new StreamingMergeOptions { ExpertWeights = weights });
            Assert.AreEqual(reads, report.Passes, run);
            Assert.AreEqual(run, method.ThresholdRoute);
            CollectionAssert.AreEqual(expected, method.GlobalThresholds!.ToArray(), run);
            using var output = Checkpoint.Open(report.OutputPath);
            foreach (string name in baseTensors.Keys)
            {
                using var streamed = output.ReadTensor(name);
                CollectionAssert.AreEqual(inMemory.Merged[name].bytes.ToArray(), streamed.bytes.ToArray(), $"{run} {name}");
            }
        }
    }

    /// <summary>
    /// θ0 and τ_i on a grid of multiples of 1/4 (exact in float32), so θ_i − θ0 = τ_i exactly and many trimmed task vectors
    /// cancel exactly (γ = 0 with kept entries of both signs): their merged value depends on the model-wide majority sign.
    /// τ ∈ {lowest .. 3}/4: lowest −4 makes the majority −1, lowest −3 makes it +1 (symmetric, then counted).
    /// </summary>
    private static (string Base, string[] Experts, Dictionary<string, Tensor> BaseTensors, List<Dictionary<string, Tensor>> ExpertTensors)
        WriteCancellingModels(TempDirectory dir, int lowest, int seed)
    {
        var g = new Generator((ulong)seed);
        var shapes = new Dictionary<string, long[]> { ["w"] = [300, 257], ["b"] = [257], ["v"] = [33] };
        var baseTensors = shapes.ToDictionary(kv => kv.Key, kv => randint(-64, 64, kv.Value, generator: g).to_type(ScalarType.Float32).DividedBy(8));
        var experts = Enumerable.Range(0, 4).Select(_ => baseTensors.ToDictionary(kv => kv.Key,
            kv => kv.Value.Plus((randint(lowest, 4, kv.Value.shape, generator: g).to_type(ScalarType.Float32).DividedBy(4))))).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseTensors);
        for (int i = 0; i < experts.Count; i++) SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), experts[i]);
        return (dir.File("base.safetensors"), [.. Enumerable.Range(0, 4).Select(i => dir.File($"e{i}.safetensors"))], baseTensors, experts);
    }

    /// <summary>(Σ γ over the model, number of entries with γ = 0 whose trimmed τ_i are not all 0), from the thresholds.</summary>
    private static (long Balance, long Dependent) MajorityStatistics(Dictionary<string, Tensor> baseTensors, List<Dictionary<string, Tensor>> experts,
        IReadOnlyList<float> thresholds)
    {
        long balance = 0, dependent = 0;
        foreach (var name in baseTensors.Keys)
        {
            using var scope = NewDisposeScope();
            var trimmed = stack(experts.Select((e, i) => { var tau = e[name] - baseTensors[name]; return tau * tau.abs().ge(thresholds[i]); }).ToArray());
            var sum = trimmed.sum(dim: 0);
            balance += (long)sum.sign().sum().item<float>();
            dependent += (sum.eq(0) & trimmed.ne(0).any(dim: 0)).sum().item<long>();
        }
        return (balance, dependent);
    }

    [TestMethod]
    [DataRow(-4, "keep=0.5", -1)]
    [DataRow(-4, "keep=0.5;merge-func=mean", -1)]
    [DataRow(-3, "keep=0.5", 1)]
    [DataRow(-4, "keep=0.3;lambda=1", -1)]
    public void MajoritySignFoldedIntoTheMergeIsPatchedExactly(int lowest, string parameters, int expectedMajority)
    {
        using var dir = new TempDirectory();
        var (basePath, experts, baseTensors, expertTensors) = WriteCancellingModels(dir, lowest, seed: 11);
        var values = MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries));
        var reference = (TiesMerge)MergeMethodRegistry.Default.Create("ties", values);
        var inMemory = new InMemoryMergeDriver().Merge(reference, baseTensors, expertTensors.Cast<IReadOnlyDictionary<string, Tensor>>().ToList());

        // The data does what the test needs: many entries depend on the majority sign, and the majority is the expected one.
        var (balance, dependent) = MajorityStatistics(baseTensors, expertTensors, reference.GlobalThresholds!);
        Assert.AreEqual(expectedMajority, balance >= 0 ? 1 : -1, $"balance {balance}");
        Assert.IsGreaterThan(1000L, dependent);

        // Deferred (patched) for 1 and 3 threads, to a sharded bf16 output (patches into finished shards), and with too
        // small a patch budget (the driver falls back to the majority pass and merges again).
        var runs = new (string Name, StreamingMergeDriver Driver, StreamingMergeOptions Options, int Passes)[]
        {
            ("1 thread", new StreamingMergeDriver { WorkerCount = 1 }, new StreamingMergeOptions(), 3),
            ("3 threads", new StreamingMergeDriver { WorkerCount = 3 }, new StreamingMergeOptions(), 3),
            ("sharded bf16", new StreamingMergeDriver(), new StreamingMergeOptions { MaxShardBytes = 1000, OutputDType = SafeTensorsDType.BF16 }, 3),
            ("overflow", new StreamingMergeDriver { MaxDeferredPatches = 10 }, new StreamingMergeOptions(), 5),
        };
        foreach (var (runName, driver, options, passes) in runs)
        {
            string path = dir.File(runName.Replace(' ', '-') + (options.MaxShardBytes is null ? ".safetensors" : ""));
            var report = driver.Merge(MergeMethodRegistry.Default.Create("ties", values), basePath, experts, path, options);
            Assert.AreEqual(passes, report.Passes, runName);
            using var output = Checkpoint.Open(report.OutputPath);
            if (options.MaxShardBytes is not null) Assert.IsGreaterThan(1, output.Files.Count);
            foreach (string name in baseTensors.Keys)
            {
                using var streamed = output.ReadTensor(name);
                // A bf16 output is read back as float32: the in-memory result rounded to bf16 the same way.
                using var expected = options.OutputDType is null ? inMemory.Merged[name].alias()
                    : inMemory.Merged[name].to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
                CollectionAssert.AreEqual(expected.bytes.ToArray(), streamed.bytes.ToArray(), $"{parameters} {runName} {name}");
            }
        }

        Assert.AreEqual(0, Directory.GetFiles(dir.Path, "*.partial", SearchOption.AllDirectories).Length, "no temporary file is left");
    }

    [TestMethod]
    [DataRow(0L, float.NaN)]
    [DataRow(1_048_577L, float.PositiveInfinity)] // in the second 4 MiB piece
    [DataRow(1_499_498L, float.NegativeInfinity)] // the last value, past the last whole SIMD vector
    public void NonFiniteValueAnywhereInALargeTensorIsFound(long index, float bad)
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, expertTensors) = WriteLargeModels(dir);
        var poisoned = expertTensors[1]["big"].flatten().clone();
        poisoned[index] = bad;
        SafeTensorsWriter.Save(experts[1], new Dictionary<string, Tensor>(expertTensors[1]) { ["big"] = poisoned.reshape(1501, 999) });
        AssertRejected(dir, basePath, experts, $"Tensor 'big': expert 1 ('{experts[1]}') contains 1 NaN or infinite value(s).");
    }

    /// <summary>A tensor with no entries (shape [0, 4]) merges to an empty tensor on every path, beside ordinary ones.</summary>
    [TestMethod]
    [DataRow("task-arithmetic")]
    [DataRow("ties")]
    public void TensorWithoutEntriesMerges(string method)
    {
        using var dir = new TempDirectory();
        var g = new Generator(9);
        var baseTensors = new Dictionary<string, Tensor> { ["empty"] = zeros(0, 4), ["w"] = randn(70, 1000, generator: g) };
        var expertTensors = Enumerable.Range(0, 2).Select(_ => baseTensors.ToDictionary(kv => kv.Key, kv => kv.Value.Plus((randn(kv.Value.shape, generator: g).Times(0.01))))).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseTensors);
        for (int i = 0; i < 2; i++) SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), expertTensors[i]);
        var inMemory = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(method), baseTensors, expertTensors.Cast<IReadOnlyDictionary<string, Tensor>>().ToList());

        // Two samples: the default (every chunk, as the model is small) and one chunk of the three.
        foreach (var candidate in new IMergeMethod[] { MergeMethodRegistry.Default.Create(method), new TiesMerge { SampledChunkCount = 1 } }.Take(method == "ties" ? 2 : 1))
        {
            var report = new StreamingMergeDriver().Merge(candidate, dir.File("base.safetensors"), [dir.File("e0.safetensors"), dir.File("e1.safetensors")], dir.File("out.safetensors"));
            CollectionAssert.Contains(report.MergedTensors.ToList(), "empty");
            using var output = Checkpoint.Open(report.OutputPath);
            CollectionAssert.AreEqual(new long[] { 0, 4 }, output.GetEntry("empty").Shape);
            using var streamed = output.ReadTensor("w");
            CollectionAssert.AreEqual(inMemory.Merged["w"].bytes.ToArray(), streamed.bytes.ToArray(), method);
        }
    }

    [TestMethod]
    public void CancelledMergeLeavesNoFile()
    {
        using var dir = new TempDirectory();
        var (basePath, experts, _, _) = WriteModels(dir);
        using var cancel = new CancellationTokenSource();
        var progress = new SynchronousProgress<StreamingMergeProgress>(p => { if (p.Phase == "merge" && p.Tensor == 2) cancel.Cancel(); });
        Assert.ThrowsExactly<OperationCanceledException>(() => new StreamingMergeDriver().Merge(MergeMethodRegistry.Default.Create("ties"),
            basePath, experts, dir.File("out.safetensors"), new StreamingMergeOptions { Progress = progress }, cancel.Token));
        Assert.IsFalse(File.Exists(dir.File("out.safetensors")));
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, "*.partial").Length + Directory.GetFiles(dir.Path, ".*").Length);
    }
}
