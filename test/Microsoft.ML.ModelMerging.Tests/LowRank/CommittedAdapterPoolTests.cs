using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Onnx;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>The LoRA and L-LoRA pools committed beside the default zoo (<c>zoos/default/lora</c>, <c>zoos/default/l-lora</c>).</summary>
[TestClass]
public sealed class CommittedAdapterPoolTests
{
    private static string PoolOf(string mode)
    {
        string pool = Path.Combine(CommittedZoo.Default, mode);
        if (!PoolManifest.Exists(pool)) Assert.Inconclusive($"{pool} is not committed yet: build/zoo-adapters.sh trains it.");
        return pool;
    }

    [TestMethod]
    [DataRow("lora")]
    [DataRow("l-lora")]
    public void AnAdapterExpertReproducesItsRecordedAccuracy(string mode)
    {
        using var pool = ExpertPool.Load(PoolOf(mode), ["scenes"]);
        var task = pool.Manifest.Task("scenes");
        Assert.AreEqual(mode, task.Training!.Mode);
        Assert.IsTrue(pool.IsAdapterExpert("scenes"));
        var accuracy = TaskAccuracy.Evaluate(pool, pool.Config, pool.Expert("scenes"), EvaluationSplit.Test);
        Assert.AreEqual(task.Individual.Test, Math.Round(accuracy.PerTask["scenes"], 4));
    }

    /// <summary>
    /// <c>export-onnx --model &lt;adapter folder&gt; --zoo &lt;pool&gt;</c> writes the pool's base with the adapter's ΔW and the
    /// head of the adapter's task; ONNX Runtime scores like the densified TorchSharp forward.
    /// </summary>
    [TestMethod]
    public void AnAdapterExportsToOnnxWithItsTasksHead()
    {
        string poolDirectory = PoolOf("l-lora");
        using var pool = ExpertPool.Load(poolDirectory, ["road-signs"]);
        string adapter = Path.Combine(poolDirectory, pool.Manifest.Task("road-signs").Expert);
        using var dir = new TempDirectory();
        var (exit, text, error) = CliRunner.Run("export-onnx", "--model", adapter, "--zoo", poolDirectory, "--scores", "logits", "--out", dir.File("m.onnx"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "1 head(s) (road-signs)");

        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(dir.File("m.onnx")));
        using var scope = NewDisposeScope();
        Tensor images = pool.LoadData("road-signs").Test.ToTensor().narrow(0, 0, 16);
        var outputs = runner.Run(DenseVitOnnxExporter.InputName, images.reshape(16, -1));
        Tensor expected = pool.Head("road-signs").Forward(VisionTransformer.Forward(pool.Config, pool.Expert("road-signs"), images));
        float[] onnx = outputs["scores_road-signs"].data<float>().ToArray(), torch = expected.detach().contiguous().data<float>().ToArray();
        Assert.HasCount(torch.Length, onnx);
        Assert.IsLessThanOrEqualTo(1e-4, onnx.Zip(torch, (a, b) => Math.Abs(a - b)).Max());

        (exit, _, error) = CliRunner.Run("export-onnx", "--model", adapter, "--out", dir.File("n.onnx"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "is a LoRA adapter: give --zoo");

        (exit, _, error) = CliRunner.Run("align", "--zoo", poolDirectory, "--out", dir.File("aligned"));
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "is a LoRA adapter: alignment permutes full checkpoints");
        Assert.IsFalse(Directory.Exists(dir.File("aligned")), "nothing written");
    }

    /// <summary>Every L-LoRA adapter keeps A = A0, the initialisation its lora seed gives: the modules share one tangent space.</summary>
    [TestMethod]
    public void LinearisedAdaptersKeepTheSharedInitialisation()
    {
        string directory = PoolOf("l-lora");
        var manifest = PoolManifest.Read(directory);
        var config = manifest.ModelConfig;
        foreach (var task in manifest.Tasks)
        {
            using var scope = NewDisposeScope();
            using var adapter = PeftAdapterFolder.Load(Path.Combine(directory, task.Expert), config);
            Assert.IsTrue(adapter.Options.Linearized, task.Name);
            using var initial = LoraAdapter.Initialize(config, adapter.Options);
            foreach (var m in adapter.Modules)
                Assert.IsTrue(m.A.eq(initial.Module(m.Target.Prefix)!.A).all().item<bool>(), $"{task.Name}: {m.Target.Prefix}");
        }
    }

    private static Dictionary<string, Tensor> TaskArithmetic(ExpertPool pool, double lambda, string space)
    {
        using var model = MergeAlgorithmRegistry.Default.Get("task-arithmetic").Run(pool,
            MergeParameters.Parse($"lambda={lambda.ToString(System.Globalization.CultureInfo.InvariantCulture)}", $"adapter-space={space}"), new AlgorithmContext());
        return model.Parts[0].Exporter.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
    }

    /// <summary>
    /// An L-LoRA adapter never leaves A0, so task arithmetic on its factors is task arithmetic on its dense ΔW: the two
    /// spaces give the same model.
    /// </summary>
    [TestMethod]
    public void FactorTaskArithmeticOfLinearisedAdaptersIsTheirDenseTaskArithmetic()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(PoolOf("l-lora"));
        var factors = TaskArithmetic(pool, 0.3, "factors");
        var delta = TaskArithmetic(pool, 0.3, "delta");
        Assert.HasCount(delta.Count, factors);
        foreach (var (name, expected) in delta)
            Assert.IsLessThanOrEqualTo(1e-6, (factors[name] - expected).abs().max().item<float>(), name);
    }

    /// <summary>
    /// LoRA adapters merged on their factors (the L-LoRA paper's task arithmetic): each adapted layer is
    /// W0 + s·(λ·Σ B_t)·(A0 + λ·Σ (A_t − A0)), computed here in float64 from the adapter files and the A0 an L-LoRA adapter of
    /// the same seed stores. It differs from the dense merge W0 + λ·Σ s·B_t·A_t (each task's own B_t·(A_t − A0) weighted λ²
    /// instead of λ, and products of different tasks' factors added).
    /// </summary>
    [TestMethod]
    public void FactorTaskArithmeticOfLoraAdaptersMultipliesTheSummedFactors()
    {
        using var scope = NewDisposeScope();
        string directory = PoolOf("lora");
        using var pool = ExpertPool.Load(directory);
        const double lambda = 0.3;
        var factors = TaskArithmetic(pool, lambda, "factors");
        var delta = TaskArithmetic(pool, lambda, "delta");

        var options = PeftAdapterFolder.ReadOptions(Path.Combine(directory, pool.Manifest.Task("scenes").Expert));
        string linearised = Path.Combine(PoolOf("l-lora"), PoolManifest.Read(PoolOf("l-lora")).Task("scenes").Expert);
        Assert.AreEqual(options.Seed, PeftAdapterFolder.ReadOptions(linearised).Seed, "the two modes share their initialisation");
        using var initialisation = Checkpoint.Open(Path.Combine(linearised, PeftAdapterFolder.WeightsFileName));
        var files = pool.Tasks.Select(t => Checkpoint.Open(Path.Combine(directory, t.Expert, PeftAdapterFolder.WeightsFileName))).ToList();
        try
        {
            foreach (string prefix in new[] { VisionTransformerNames.Layer(0).QProj, VisionTransformerNames.Layer(5).VProj })
            {
                Tensor a0 = initialisation.ReadTensor(PeftAdapterFolder.NameOfA(prefix)).to_type(ScalarType.Float64);
                Tensor sumB = zeros_like(files[0].ReadTensor(PeftAdapterFolder.NameOfB(prefix))).to_type(ScalarType.Float64);
                Tensor sumDeltaA = zeros_like(a0);
                Tensor sumDense = zeros(a0.shape[1], dtype: ScalarType.Float64).unsqueeze(0).expand(sumB.shape[0], -1).clone();
                foreach (var file in files)
                {
                    Tensor a = file.ReadTensor(PeftAdapterFolder.NameOfA(prefix)).to_type(ScalarType.Float64);
                    Tensor b = file.ReadTensor(PeftAdapterFolder.NameOfB(prefix)).to_type(ScalarType.Float64);
                    sumB += b;
                    sumDeltaA += a - a0;
                    sumDense += b.matmul(a).Times(options.Scale);
                }
                string weight = VisionTransformerNames.Weight(prefix);
                Tensor w0 = pool.Pretrained[weight].to_type(ScalarType.Float64);
                Tensor expected = w0.Plus((sumB.Times(lambda)).matmul(a0.Plus(sumDeltaA.Times(lambda))).Times(options.Scale));
                Assert.IsLessThanOrEqualTo(1e-6, (factors[weight].to_type(ScalarType.Float64) - expected).abs().max().item<double>(), weight);
                Assert.IsLessThanOrEqualTo(1e-6, (delta[weight].to_type(ScalarType.Float64) - (w0.Plus(sumDense.Times(lambda)))).abs().max().item<double>(), weight);
                Assert.IsGreaterThan(1e-3, (factors[weight] - delta[weight]).abs().max().item<float>(), $"{weight}: the two spaces give different layers");
            }
        }
        finally
        {
            foreach (var file in files) file.Dispose();
        }
    }

    /// <summary>
    /// <c>mlmerge merge --param adapter-space=factors</c> on adapter folders writes the merged adapter as a PEFT folder; applied
    /// to the base it is the model the registry's factor merge of the same pool gives. A .safetensors output is refused.
    /// </summary>
    [TestMethod]
    public void MergeWritesTheFactorMergeAsAnAdapterFolder()
    {
        using var scope = NewDisposeScope();
        string directory = PoolOf("lora");
        using var pool = ExpertPool.Load(directory);
        using var dir = new TempDirectory();
        var args = new List<string> { "merge", "--method", "ties", "--base", Path.Combine(directory, pool.Manifest.Pretrained!),
            "--param", "adapter-space=factors", "--lambda", "0.3", "--out", dir.File("merged") };
        // Folders named with a trailing separator, as shell completion writes them: the merged adapter still knows its experts.
        foreach (var task in pool.Tasks) args.AddRange(["--expert", Path.Combine(directory, task.Expert) + Path.DirectorySeparatorChar]);
        var (exit, text, error) = CliRunner.Run([.. args]);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "ties: 24 tensors merged");
        Assert.IsTrue(PeftAdapterFolder.IsAdapter(dir.File("merged")));

        using var adapter = PeftAdapterFolder.Load(dir.File("merged"), pool.Config);
        var dense = adapter.Densify(pool.Pretrained);
        using var model = MergeAlgorithmRegistry.Default.Get("ties").Run(pool, MergeParameters.Parse("lambda=0.3", "adapter-space=factors"), new AlgorithmContext());
        foreach (var (name, expected) in model.Parts[0].Exporter.Weights)
            Assert.IsLessThanOrEqualTo(1e-6, (dense[name] - expected).abs().max().item<float>(), name);
        foreach (var t in dense.Values) t.Dispose();

        // The merged adapter records the experts it merged, so export-onnx gives it their heads without --task.
        (exit, text, error) = CliRunner.Run("export-onnx", "--model", dir.File("merged"), "--zoo", directory, "--out", dir.File("merged.onnx"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, $"with {pool.Tasks.Count} head(s) ({string.Join(", ", pool.TaskNames)})");

        args[args.IndexOf(dir.File("merged"))] = dir.File("merged.safetensors");
        (exit, _, error) = CliRunner.Run([.. args]);
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "give --out a folder");
        Assert.IsFalse(File.Exists(dir.File("merged.safetensors")));
    }

    /// <summary>
    /// L-LoRA adapters saved in half precision (PEFT's <c>model.half()</c> before <c>save_pretrained</c>) still hold A0, rounded
    /// to the file's dtype: they merge on their factors, and the result is the float32 adapters' merge up to that rounding.
    /// </summary>
    [TestMethod]
    [DataRow(SafeTensorsDType.F16)]
    [DataRow(SafeTensorsDType.BF16)]
    public void HalfPrecisionLinearisedAdaptersMergeOnTheirFactors(SafeTensorsDType dtype)
    {
        using var scope = NewDisposeScope();
        string directory = PoolOf("l-lora");
        var manifest = PoolManifest.Read(directory);
        using var dir = new TempDirectory();
        var method = MergeMethodRegistry.Default.Create("task-arithmetic", MergeParameters.Parse("lambda=0.5"));
        var full = new List<string>();
        var half = new List<string>();
        foreach (string task in new[] { "scenes", "textures" })
        {
            string from = Path.Combine(directory, manifest.Task(task).Expert);
            full.Add(from);
            half.Add(dir.File(task));
            Directory.CreateDirectory(half[^1]);
            File.Copy(Path.Combine(from, PeftAdapterFolder.ConfigFileName), Path.Combine(half[^1], PeftAdapterFolder.ConfigFileName));
            using var checkpoint = Checkpoint.Open(Path.Combine(from, PeftAdapterFolder.WeightsFileName));
            var tensors = checkpoint.Tensors.ToDictionary(e => e.Name, e => checkpoint.ReadTensor(e.Name));
            SafeTensorsWriter.Save(Path.Combine(half[^1], PeftAdapterFolder.WeightsFileName), tensors, floatType: dtype);
        }

        using var expected = LoraFactorMerge.Merge(method, full, manifest.ModelConfig);
        using var merged = LoraFactorMerge.Merge(method, half, manifest.ModelConfig);
        foreach (var m in merged.Modules)
        {
            using var want = expected.Delta(m.Target.Prefix);
            using var got = merged.Delta(m.Target.Prefix);
            double relative = (got - want).abs().max().item<float>() / want.abs().max().item<float>();
            Assert.IsLessThanOrEqualTo(dtype == SafeTensorsDType.F16 ? 2e-3 : 2e-2, relative, m.Target.Prefix);
        }
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }

    /// <summary>
    /// Merging on the factors needs the adapters' initialisation: an adapter without <c>lora_seed</c>, or whose stored A is
    /// not what its seed gives, is refused by name. The CLI never writes over an input or over a folder that is not an
    /// adapter, and takes the underscore spelling and any case of the parameter as the registry does.
    /// </summary>
    [TestMethod]
    public void FactorMergeRefusesUnknownInitialisationsAndOutputsThatWouldDestroyInputs()
    {
        using var scope = NewDisposeScope();
        string directory = PoolOf("l-lora");
        var manifest = PoolManifest.Read(directory);
        using var dir = new TempDirectory();
        foreach (string task in new[] { "scenes", "textures" }) CopyFolder(Path.Combine(directory, manifest.Task(task).Expert), dir.File($"in/{task}"));
        var method = MergeMethodRegistry.Default.Create("task-arithmetic", MergeParameters.Parse("lambda=0.3"));
        string[] folders = [dir.File("in/scenes"), dir.File("in/textures")];

        using (var merged = LoraFactorMerge.Merge(method, folders, manifest.ModelConfig))
        using (var initial = LoraAdapter.Initialize(manifest.ModelConfig, merged.Options))
        {
            foreach (var m in merged.Modules)
                Assert.IsTrue(m.A.eq(initial.Module(m.Target.Prefix)!.A0).all().item<bool>(), $"{m.Target.Prefix}: an L-LoRA merge keeps A0");
        }

        // Expert weights scale each factor task vector: weights (1, 0) merge the first adapter alone.
        using (var weighted = LoraFactorMerge.Merge(method, folders, manifest.ModelConfig, expertWeights: [1, 0]))
        using (var alone = LoraFactorMerge.Merge(method, [folders[0]], manifest.ModelConfig))
        {
            foreach (var m in weighted.Modules)
                Assert.IsLessThanOrEqualTo(1e-7, (m.B - alone.Module(m.Target.Prefix)!.B).abs().max().item<float>(), m.Target.Prefix);
        }

        string config = Path.Combine(folders[1], PeftAdapterFolder.ConfigFileName);
        string original = File.ReadAllText(config);
        File.WriteAllText(config, original.Replace("\"lora_seed\": 0", "\"lora_seed\": 7"));
        var error = Assert.Throws<ArgumentException>(() => LoraFactorMerge.Merge(method, folders, manifest.ModelConfig));
        StringAssert.Contains(error.Message, $"{folders[1]} has lora_seed = 7, {folders[0]} has 0");
        File.WriteAllText(config, original.Replace("\"lora_seed\": 0", "\"lora_seed\": 7").Replace("\"lora_seed\": 7,", "").Replace(",\n  \"lora_seed\": 7", ""));
        Assert.IsFalse(PeftAdapterFolder.RecordsSeed(folders[1]), File.ReadAllText(config));
        error = Assert.Throws<ArgumentException>(() => LoraFactorMerge.Merge(method, folders, manifest.ModelConfig));
        StringAssert.Contains(error.Message, "records no lora_seed");
        StringAssert.Contains(error.Message, "textures");
        File.WriteAllText(config, original);

        // Every seed agrees, but the stored A is not what the seed gives: caught on L-LoRA adapters, whose A never moves.
        foreach (string folder in folders)
        {
            string path = Path.Combine(folder, PeftAdapterFolder.ConfigFileName);
            File.WriteAllText(path, File.ReadAllText(path).Replace("\"lora_seed\": 0", "\"lora_seed\": 3"));
        }
        error = Assert.Throws<ArgumentException>(() => LoraFactorMerge.Merge(method, folders, manifest.ModelConfig));
        StringAssert.Contains(error.Message, "is not the initialisation lora_seed = 3 gives");
        foreach (string folder in folders)
        {
            string path = Path.Combine(folder, PeftAdapterFolder.ConfigFileName);
            File.WriteAllText(path, File.ReadAllText(path).Replace("\"lora_seed\": 3", "\"lora_seed\": 0"));
        }

        string basePath = Path.Combine(directory, manifest.Pretrained!);
        (int, string, string) Merge(string output, string parameter) => CliRunner.Run("merge", "--method", "task-arithmetic", "--base", basePath,
            "--expert", folders[0], "--expert", folders[1], "--param", parameter, "--lambda", "0.3", "--out", output);
        var (exit, _, message) = Merge(dir.File("in"), "adapter-space=factors");
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(message, "is not an adapter folder");
        (exit, _, message) = Merge(folders[0], "adapter-space=factors");
        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(message, "holds the input");
        Assert.IsTrue(File.Exists(Path.Combine(folders[0], PeftAdapterFolder.WeightsFileName)), "the input is still there");

        (exit, _, message) = Merge(dir.File("out-a") + Path.DirectorySeparatorChar, "adapter_space=Factors");
        Assert.AreEqual(0, exit, message);
        (exit, _, message) = Merge(dir.File("out-b"), "adapter-space=factors");
        Assert.AreEqual(0, exit, message);
        Assert.IsTrue(File.ReadAllBytes(dir.File("out-a/adapter_model.safetensors")).SequenceEqual(File.ReadAllBytes(dir.File("out-b/adapter_model.safetensors"))));
        (exit, _, message) = Merge(dir.File("out-b"), "adapter-space=factors");
        Assert.AreEqual(0, exit, "an adapter folder is replaced: " + message);
    }
}

