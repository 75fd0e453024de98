using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Cli;

/// <summary>
/// <c>mlmerge merge</c> on checkpoints in the Hugging Face layout (a directory with <c>model.safetensors</c>,
/// <c>config.json</c> and <c>preprocessor_config.json</c>), as a user holding CLIP experts meets it (issue 18, items 4 and 5).
/// </summary>
[TestClass]
public sealed class HuggingFaceMergeTests
{
    private const string ConfigJson = """
        {"architectures": ["CLIPVisionModel"], "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "patch_size": 7, "image_size": 28, "num_channels": 1, "hidden_act": "quick_gelu",
         "layer_norm_eps": 1e-5}
        """;

    private const string PreprocessorJson = """
        {"image_mean": [0.25], "image_std": [0.5], "crop_size": 28, "size": {"shortest_edge": 28}, "do_rescale": true, "rescale_factor": 0.00392156862745098}
        """;

    /// <summary>A base and <paramref name="experts"/> experts (base + seeded noise), each a Hugging Face model directory.</summary>
    private static (string Base, string[] Experts) WriteHuggingFaceModels(TempDirectory dir, int experts = 2)
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray();
        var weights = ModelTestData.RandomWeights(config, seed: 3);
        string Write(string name, Dictionary<string, Tensor> tensors)
        {
            string path = dir.File(name);
            Directory.CreateDirectory(path);
            SafeTensorsWriter.Save(Path.Combine(path, "model.safetensors"), tensors);
            File.WriteAllText(Path.Combine(path, "config.json"), ConfigJson);
            File.WriteAllText(Path.Combine(path, "preprocessor_config.json"), PreprocessorJson);
            return path;
        }

        string basePath = Write("base", weights);
        var expertPaths = Enumerable.Range(0, experts).Select(i =>
        {
            var g = new Generator((ulong)(10 + i));
            return Write($"expert{i}", weights.ToDictionary(kv => kv.Key, kv => kv.Value.Plus(randn(kv.Value.shape, generator: g).Times(0.01))));
        }).ToArray();
        return (basePath, expertPaths);
    }

    [TestMethod]
    [DataRow("merged/model.safetensors", null)]
    [DataRow("merged", "1KB")]
    public void OutputCarriesTheBaseConfigAndExportsToOnnx(string output, string? shardSize)
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir);
        Directory.CreateDirectory(dir.File("merged"));
        string[] args = ["merge", "--method", "ties", "--base", basePath, "--expert", experts[0], "--expert", experts[1], "--out", dir.File(output)];
        if (shardSize is not null) args = [.. args, "--shard-size", shardSize];

        var (exit, _, error) = CliRunner.Run(args);

        Assert.AreEqual(0, exit, error);
        Assert.AreEqual(ConfigJson, File.ReadAllText(dir.File("merged/config.json")));
        Assert.AreEqual(PreprocessorJson, File.ReadAllText(dir.File("merged/preprocessor_config.json")));
        using (var merged = Checkpoint.Open(dir.File(output)))
        {
            var stored = VisionTransformerConfig.FromJson(merged.Metadata[VisionTransformerConfig.MetadataKey]);
            Assert.AreEqual(VisionTransformerConfig.FromHuggingFaceConfig(ConfigJson, preprocessorConfigJson: PreprocessorJson), stored);
        }

        // Metadata alone makes the output self-describing: the copied files are not needed to load or export it.
        File.Delete(dir.File("merged/config.json"));
        File.Delete(dir.File("merged/preprocessor_config.json"));
        using (var head = ClassificationHead.CreateLinear(["a", "b"], ModelTestData.TinyGray().FeatureDim, seed: 1))
            ModelCheckpoints.SaveHead(dir.File("head.safetensors"), head);
        (exit, _, error) = CliRunner.Run("export-onnx", "--model", dir.File(output), "--head", "t=" + dir.File("head.safetensors"), "--out", dir.File("m.onnx"));
        Assert.AreEqual(0, exit, error);
        Assert.IsTrue(File.Exists(dir.File("m.onnx")));
    }

    [TestMethod]
    public void AFileAlreadyBesideTheOutputIsLeftAlone()
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir);
        Directory.CreateDirectory(dir.File("out"));
        File.WriteAllText(dir.File("out/config.json"), "{}");
        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", basePath, "--expert", experts[0], "--out", dir.File("out/m.safetensors"));
        Assert.AreEqual(0, exit, error);
        Assert.AreEqual("{}", File.ReadAllText(dir.File("out/config.json")));
        Assert.AreEqual(PreprocessorJson, File.ReadAllText(dir.File("out/preprocessor_config.json")));
    }

    /// <summary>
    /// Provenance: every input is told apart by a fingerprint of its content (the experts here share their file name,
    /// their tensor names, shapes and dtypes, hence their headers), and every parameter is recorded, defaults included.
    /// </summary>
    [TestMethod]
    public void ProvenanceTellsInputsApartAndRecordsEveryParameter()
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir, experts: 3);
        var (exit, _, error) = CliRunner.Run("merge", "--method", "dare", "--then", "ties", "--base", basePath,
            "--expert", experts[0], "--expert", experts[1], "--expert", experts[2], "--out", dir.File("m.safetensors"));
        Assert.AreEqual(0, exit, error);

        using var merged = Checkpoint.Open(dir.File("m.safetensors"));
        var inputs = JsonSerializer.Deserialize<List<Dictionary<string, string>>>(merged.Metadata[StreamingMergeDriver.InputsMetadataKey])!;
        Assert.HasCount(4, inputs);
        Assert.AreEqual(1, inputs.Skip(1).Select(i => i["header_sha256"]).Distinct().Count(), "the experts' headers are alike");
        Assert.AreEqual(4, inputs.Select(i => i["content_sha256"]).Distinct().Count(), "contents differ");
        Assert.AreEqual(string.Join("|", new[] { basePath }.Concat(experts).Select(p => Path.Combine(Path.GetFullPath(p), "model.safetensors"))), string.Join("|", inputs.Select(i => i["path"])));

        var parameters = JsonSerializer.Deserialize<Dictionary<string, string>>(merged.Metadata[StreamingMergeDriver.ParametersMetadataKey])!;
        var expected = new Dictionary<string, string>
        {
            ["then"] = "ties", ["drop-rate"] = "0.5", ["seed"] = "0", ["lambda"] = "0.3", ["keep"] = "0.2", ["trim"] = "global",
            ["merge-func"] = "sum", ["expert_weights"] = "1,1,1", ["allow_missing"] = "false", ["dtype"] = "base",
            ["shard_size"] = "none",
        };
        foreach (var (name, value) in expected) Assert.AreEqual(value, parameters[name], name);
        Assert.IsTrue(parameters.ContainsKey("exclude"), "the exclusion patterns in force");
    }

    /// <summary>The same job on the same inputs gives the same content fingerprints; one changed value changes its input's.</summary>
    [TestMethod]
    public void ContentFingerprintFollowsTheValues()
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir);
        string Fingerprint(string output)
        {
            var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", basePath, "--expert", experts[0], "--out", dir.File(output));
            Assert.AreEqual(0, exit, error);
            using var merged = Checkpoint.Open(dir.File(output));
            return JsonSerializer.Deserialize<List<Dictionary<string, string>>>(merged.Metadata[StreamingMergeDriver.InputsMetadataKey])![1]["content_sha256"];
        }

        string first = Fingerprint("a.safetensors");
        Assert.AreEqual(first, Fingerprint("b.safetensors"));
        string file = Path.Combine(experts[0], "model.safetensors");
        Dictionary<string, Tensor> tensors;
        using (var checkpoint = Checkpoint.Open(file)) tensors = checkpoint.ReadAll();
        using (var flat = tensors[VisionTransformerNames.PatchEmbedding].view(-1))
        using (var first0 = flat.narrow(0, 0, 1)) first0.PlusInPlace(tensors[VisionTransformerNames.PatchEmbedding].max());
        SafeTensorsWriter.Save(file, tensors);

        Assert.AreNotEqual(first, Fingerprint("c.safetensors"));
    }

    /// <summary>Issue 16: the base's accuracy (and other facts about the base alone) is not passed on to the merge.</summary>
    [TestMethod]
    public void BaseAccuracyIsNotInherited()
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir);
        string file = Path.Combine(basePath, "model.safetensors");
        Dictionary<string, Tensor> tensors;
        using (var checkpoint = Checkpoint.Open(file)) tensors = checkpoint.ReadAll();
        SafeTensorsWriter.Save(file, tensors, new Dictionary<string, string>
        {
            ["mlmerge.zoo_accuracy"] = "{\"individual\":{\"validation\":0.9}}", ["mlmerge.zoo_recipe"] = "abc", ["mlmerge.task"] = "mnist",
            ["mlmerge.merge_method"] = "ties", ["format"] = "pt",
        });

        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", basePath, "--expert", experts[0], "--out", dir.File("m.safetensors"));
        Assert.AreEqual(0, exit, error);
        using var merged = Checkpoint.Open(dir.File("m.safetensors"));
        foreach (string key in new[] { "mlmerge.zoo_accuracy", "mlmerge.zoo_recipe", "mlmerge.task" })
            Assert.IsFalse(merged.Metadata.ContainsKey(key), key);
        Assert.AreEqual("task-arithmetic", merged.Metadata[StreamingMergeDriver.MethodMetadataKey]);
        Assert.AreEqual("pt", merged.Metadata["format"]);
    }

    /// <summary>Issue 16: progress numbers the passes as the summary counts them.</summary>
    [TestMethod]
    [DataRow("ties", "")]
    [DataRow("ties", "trim=per-tensor")]
    [DataRow("dare", "then=ties")]
    [DataRow("task-arithmetic", "")]
    [DataRow("consensus", "")]
    public void ProgressAndSummaryAgreeOnThePasses(string method, string parameters)
    {
        using var dir = new TempDirectory();
        var (basePath, experts) = WriteHuggingFaceModels(dir);
        var reports = new List<StreamingMergeProgress>();
        var job = new MergeJob
        {
            Method = method, Base = basePath, Experts = [.. experts.Select(e => new MergeJobExpert(e))], Output = dir.File("m.safetensors"),
            Parameters = MergeParameters.Parse(parameters.Split(';', StringSplitOptions.RemoveEmptyEntries)).Values,
        };
        var report = job.Run(new SynchronousProgressForTests<StreamingMergeProgress>(reports.Add));

        var last = reports[^1];
        Assert.AreEqual("merge", last.Phase);
        Assert.AreEqual(report.Passes, last.PassCount);
        Assert.AreEqual(report.Passes - 1, last.Pass);
        Assert.IsTrue(reports.All(r => r.Pass < r.PassCount), "no pass numbered past the count");
        var merges = reports.Where(r => r.Phase == "merge").ToList();
        Assert.IsTrue(merges.All(r => r.PassCount == report.Passes), "the count is final at the merge");
        var (exit, output, error) = CliRunner.Run(["merge", "--method", method, .. parameters.Split(';', StringSplitOptions.RemoveEmptyEntries).SelectMany(p => new[] { "--param", p }),
            "--base", basePath, "--expert", experts[0], "--expert", experts[1], "--out", dir.File("n.safetensors")]);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, $"{report.Passes} pass(es)");
    }

    private sealed class SynchronousProgressForTests<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
