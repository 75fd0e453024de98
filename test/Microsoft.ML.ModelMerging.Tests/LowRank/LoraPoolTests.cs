using System.Text.Json;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Zoo;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// Adapters as files and as experts: the PEFT layout round trip and its checks, a LoRA pool made by <c>mlmerge finetune
/// --mode lora</c> on two image folders, then evaluated, merged from the adapter folders by the streaming driver and
/// merged by the algorithm registry.
/// </summary>
[TestClass]
public sealed class LoraPoolTests
{
    private static TempDirectory s_dir = null!;
    private static string s_pool = null!;
    private static (int Exit, string Output, string Error) s_first, s_second;

    [ClassInitialize]
    public static void Build(TestContext _)
    {
        s_dir = new TempDirectory();
        TestImageFolders.Shapes(s_dir.File("data/shapes"), perClass: 30, seed: 3);
        TestImageFolders.Stripes(s_dir.File("data/stripes"), perClass: 20, seed: 4);
        s_pool = s_dir.File("pool");
        s_first = CliRunner.Run("finetune", "--mode", "lora", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"),
            "--task", s_dir.File("data/shapes"), "--add-to", s_pool, "--epochs", "2", "--lr", "1e-3", "--rank", "4", "--alpha", "8", "--lora-seed", "5");
        s_second = CliRunner.Run("finetune", "--mode", "lora", "--task", s_dir.File("data/stripes"), "--add-to", s_pool, "--epochs", "2", "--lr", "1e-3",
            "--rank", "4", "--alpha", "8", "--lora-seed", "5", "--targets", "q_proj,v_proj,fc1");
    }

    [ClassCleanup]
    public static void Cleanup() => s_dir.Dispose();

    private static VisionTransformerConfig Config => ModelCheckpoints.ReadConfig(Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"));

    private static LoraAdapter RandomAdapter(LoraOptions options, ulong seed)
    {
        var adapter = LoraAdapter.Initialize(Config, options);
        using var noGrad = no_grad();
        foreach (var m in adapter.Modules) m.B.copy_(randn(m.B.shape, generator: new Generator(seed++)).Times(0.1));
        return adapter;
    }

    [TestMethod]
    public void PeftFolderRoundTripsWithPeftsNamesAndConfig()
    {
        using var scope = NewDisposeScope();
        var options = new LoraOptions { Rank = 4, Alpha = 8, Targets = ["q_proj", "fc2"], Seed = 9, Linearized = true };
        using var adapter = RandomAdapter(options, 1);
        string folder = s_dir.File("roundtrip/adapter");
        PeftAdapterFolder.Save(adapter, folder, baseModel: "openai/clip-vit-base-patch32");
        PeftAdapterFolder.Save(adapter, folder); // replaces the folder in place

        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapterFolder.ConfigFileName))))
        {
            var root = config.RootElement;
            Assert.AreEqual("LORA", root.GetProperty("peft_type").GetString());
            Assert.AreEqual(4, root.GetProperty("r").GetInt32());
            Assert.AreEqual(8.0, root.GetProperty("lora_alpha").GetDouble());
            CollectionAssert.AreEqual(new[] { "q_proj", "fc2" }, root.GetProperty("target_modules").EnumerateArray().Select(t => t.GetString()).ToArray());
            Assert.IsTrue(root.GetProperty("linearized").GetBoolean());
            Assert.AreEqual(9, root.GetProperty("lora_seed").GetInt32());
        }
        using (var file = Checkpoint.Open(Path.Combine(folder, PeftAdapterFolder.WeightsFileName)))
        {
            Assert.HasCount(2 * 2 * Config.Layers, file.Tensors);
            Assert.IsTrue(file.Contains("base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"));
            Assert.IsTrue(file.Contains("base_model.model.vision_model.encoder.layers.1.mlp.fc2.lora_B.weight"));
        }
        Assert.IsEmpty(Directory.GetDirectories(Path.GetDirectoryName(folder)!).Where(d => d != folder), "no temporary folder is left");

        using var loaded = PeftAdapterFolder.Load(folder, Config);
        Assert.AreEqual(options, loaded.Options with { Targets = options.Targets });
        CollectionAssert.AreEqual(options.Targets.ToArray(), loaded.Options.Targets.ToArray());
        foreach (var m in adapter.Modules)
        {
            var other = loaded.Module(m.Target.Prefix)!;
            Assert.IsTrue(m.A.eq(other.A).all().item<bool>(), m.Target.Prefix);
            Assert.IsTrue(m.B.eq(other.B).all().item<bool>(), m.Target.Prefix);
            Assert.IsLessThan(1e-7, (adapter.Delta(m.Target.Prefix) - loaded.Delta(m.Target.Prefix)).abs().max().item<float>());
        }
    }

    [TestMethod]
    public void AnAdapterWithAWrongRankInOneTensorIsRefusedNamingFileTensorAndShape()
    {
        using var scope = NewDisposeScope();
        using var adapter = RandomAdapter(new LoraOptions { Rank = 4, Alpha = 8 }, 2);
        string folder = s_dir.File("bad/adapter");
        PeftAdapterFolder.Save(adapter, folder);
        string weights = Path.Combine(folder, PeftAdapterFolder.WeightsFileName);
        Dictionary<string, Tensor> tensors;
        using (var file = Checkpoint.Open(weights)) tensors = file.ReadAll();
        string bad = PeftAdapterFolder.NameOfA(VisionTransformerNames.Layer(1).VProj);
        tensors[bad] = zeros(3, Config.Width);
        SafeTensorsWriter.Save(weights, tensors);

        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, weights);
        StringAssert.Contains(error.Message, bad);
        StringAssert.Contains(error.Message, $"expected [4, {Config.Width}]");

        // A tensor for a module the config does not target is refused too.
        tensors[bad] = zeros(4, Config.Width);
        tensors[PeftAdapterFolder.NameOfA(VisionTransformerNames.Layer(0).KProj)] = zeros(4, Config.Width);
        SafeTensorsWriter.Save(weights, tensors);
        error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, "k_proj");
    }

    /// <summary>
    /// PEFT's <c>layers_to_transform</c> is honoured (only those layers are adapted, a tensor of another layer is refused
    /// naming it), and what this reader would lose is refused by its field: trained biases and whole saved modules.
    /// </summary>
    [TestMethod]
    public void PeftLayerSelectionIsHonouredAndBiasesAndSavedModulesAreRefused()
    {
        using var scope = NewDisposeScope();
        var options = new LoraOptions { Rank = 4, Alpha = 8, Layers = [0] };
        using var adapter = RandomAdapter(options, 3);
        Assert.IsTrue(adapter.Modules.All(m => m.Target.Prefix.Contains(".layers.0.", StringComparison.Ordinal)), "only layer 0 is adapted");
        string folder = s_dir.File("layers/adapter");
        PeftAdapterFolder.Save(adapter, folder);
        string configPath = Path.Combine(folder, PeftAdapterFolder.ConfigFileName);
        StringAssert.Contains(File.ReadAllText(configPath).Replace(" ", "", StringComparison.Ordinal).Replace("\n", "", StringComparison.Ordinal), "\"layers_to_transform\":[");

        using (var loaded = PeftAdapterFolder.Load(folder, Config))
        {
            CollectionAssert.AreEqual(new[] { 0 }, loaded.Options.Layers!.ToArray());
            using var pretrained = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"));
            var dense = loaded.Densify(pretrained.Weights);
            foreach (var (name, value) in dense)
            {
                bool adapted = adapter.Modules.Any(m => name == m.Target.Prefix + ".weight");
                Assert.AreEqual(adapted, !value.eq(pretrained.Weights[name]).all().item<bool>(), name);
            }
        }

        string weights = Path.Combine(folder, PeftAdapterFolder.WeightsFileName);
        Dictionary<string, Tensor> tensors;
        using (var file = Checkpoint.Open(weights)) tensors = file.ReadAll();
        string stray = PeftAdapterFolder.NameOfA(VisionTransformerNames.Layer(1).QProj);
        tensors[stray] = zeros(4, Config.Width);
        SafeTensorsWriter.Save(weights, tensors);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, stray);
        StringAssert.Contains(error.Message, "a layer outside layers_to_transform [0]");

        string json = File.ReadAllText(configPath);
        File.WriteAllText(configPath, System.Text.RegularExpressions.Regex.Replace(json, @"""layers_to_transform"":\s*\[\s*0\s*\]", "\"layers_to_transform\": [7]"));
        var beyond = Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(beyond.Message, configPath);
        StringAssert.Contains(beyond.Message, "layers_to_transform names layer 7");
        File.WriteAllText(configPath, json.Replace("\"bias\": \"none\"", "\"bias\": \"all\"", StringComparison.Ordinal));
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.ReadOptions(folder)).Message, "bias = 'all'");
        File.WriteAllText(configPath, json.Replace("\"modules_to_save\": null", "\"modules_to_save\": [\"classifier\"]", StringComparison.Ordinal));
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.ReadOptions(folder)).Message, "modules_to_save [classifier]");
    }

    /// <summary>
    /// PEFT fields that would change what the factors mean are refused by name (PiSSA-style initialisation from the base,
    /// layer replication); a value of the wrong type names its field; a config without lora_alpha takes PEFT's default 8.
    /// </summary>
    [TestMethod]
    public void PeftFieldsAreReadByTypeAndTheOnesThatChangeTheMeaningAreRefused()
    {
        using var scope = NewDisposeScope();
        using var adapter = RandomAdapter(new LoraOptions { Rank = 4, Alpha = 8 }, 5);
        string folder = s_dir.File("fields/adapter");
        PeftAdapterFolder.Save(adapter, folder);
        string configPath = Path.Combine(folder, PeftAdapterFolder.ConfigFileName);
        var original = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        string Refused(Action<System.Text.Json.Nodes.JsonObject> edit)
        {
            var config = original.DeepClone().AsObject();
            edit(config);
            File.WriteAllText(configPath, config.ToJsonString());
            return Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.ReadOptions(folder)).Message;
        }

        StringAssert.Contains(Refused(c => c["init_lora_weights"] = "pissa"), "init_lora_weights = 'pissa' initialises from the base weights");
        StringAssert.Contains(Refused(c => c["init_lora_weights"] = "loftq"), "init_lora_weights = 'loftq'");
        StringAssert.Contains(Refused(c => c["layer_replication"] = new System.Text.Json.Nodes.JsonArray(new System.Text.Json.Nodes.JsonArray(0, 2))), "layer_replication");
        StringAssert.Contains(Refused(c => c["r"] = "4"), "'r' is \"4\"; expected a positive integer");
        StringAssert.Contains(Refused(c => c["use_rslora"] = "true"), "'use_rslora' is \"true\"; expected true or false");
        StringAssert.Contains(Refused(c => c["target_parameters"] = new System.Text.Json.Nodes.JsonArray("mlp.fc1.weight")), "target_parameters [\"mlp.fc1.weight\"]");
        StringAssert.Contains(Refused(c => c["trainable_token_indices"] = new System.Text.Json.Nodes.JsonArray(1, 2)), "trainable_token_indices [1,2]");

        var loose = original.DeepClone().AsObject();
        loose["r"] = 4.0;
        loose["init_lora_weights"] = "gaussian";
        loose["target_parameters"] = null;
        loose["trainable_token_indices"] = new System.Text.Json.Nodes.JsonArray();
        Assert.IsTrue(loose.Remove("lora_alpha"));
        File.WriteAllText(configPath, loose.ToJsonString());
        var options = PeftAdapterFolder.ReadOptions(folder);
        Assert.AreEqual(4, options.Rank);
        Assert.AreEqual(8.0, options.Alpha, "PEFT's default lora_alpha");
    }

    /// <summary>
    /// An adapter folder made elsewhere is registered with `pool add` like a full expert: applied to the pool's base, scored
    /// with its head, copied as a folder with --copy; its weights file alone is named as what it is.
    /// </summary>
    [TestMethod]
    public void APeftAdapterIsRegisteredInAPoolWithItsHead()
    {
        Assert.AreEqual(0, s_first.Exit, s_first.Error);
        var trained = PoolManifest.Read(s_pool).Task("shapes");
        string adapterFolder = Path.Combine(s_pool, trained.Expert);
        string pool = s_dir.File("registered/pool");
        var (exit, _, error) = CliRunner.Run("pool", "create", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"), "--out", pool);
        Assert.AreEqual(0, exit, error);
        string[] add = ["pool", "add", "--zoo", pool, "--task", "shapes", "--images", s_dir.File("data/shapes"), "--head", Path.Combine(s_pool, trained.Head)];

        (exit, _, error) = CliRunner.Run([.. add, "--expert", Path.Combine(adapterFolder, PeftAdapterFolder.WeightsFileName)]);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "this is a LoRA adapter's weights");

        (exit, _, error) = CliRunner.Run([.. add, "--expert", adapterFolder, "--copy"]);
        Assert.AreEqual(0, exit, error);
        var registered = PoolManifest.Read(pool).Task("shapes");
        Assert.AreEqual("experts/shapes", registered.Expert);
        Assert.IsTrue(PeftAdapterFolder.IsAdapter(Path.Combine(pool, registered.Expert)), "copied as an adapter folder");
        // The same adapter, head and images: the same accuracy on the same splits as where it was trained.
        CollectionAssert.AreEquivalent(trained.Fingerprints.ToList(), registered.Fingerprints.ToList());
        Assert.AreEqual(trained.Individual.Test, registered.Individual.Test, 1e-9);
        Assert.AreEqual(trained.Individual.Validation, registered.Individual.Validation, 1e-9);
    }

    /// <summary>An L-LoRA task fine-tuned around another initialisation than the pool's L-LoRA tasks is refused before training.</summary>
    [TestMethod]
    public void AnLLoraTaskAroundAnotherInitialisationIsRefused()
    {
        string committed = Path.Combine(CommittedZoo.Default, "l-lora", PoolManifest.FileName);
        if (!File.Exists(committed)) Assert.Inconclusive("the committed L-LoRA pool is not there");
        string pool = s_dir.File("mixed-seed/pool");
        Directory.CreateDirectory(pool);
        File.Copy(committed, Path.Combine(pool, PoolManifest.FileName));
        var (exit, _, error) = CliRunner.Run("finetune", "--mode", "l-lora", "--task", s_dir.File("data/shapes"), "--add-to", pool,
            "--rank", "32", "--alpha", "64", "--targets", "q_proj,v_proj", "--lora-seed", "7", "--epochs", "1");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "starts from lora seed 0, rank 32, alpha 64, targets q_proj,v_proj; this one from lora seed 7, rank 32, alpha 64, targets q_proj,v_proj");
        CollectionAssert.AreEqual(new[] { PoolManifest.FileName }, Directory.GetFileSystemEntries(pool).Select(Path.GetFileName).ToArray(), "nothing was written");
    }

    [TestMethod]
    public void FinetuneLoraAddsAdapterExpertsThatEvalScores()
    {
        Assert.AreEqual(0, s_first.Exit, s_first.Error);
        Assert.AreEqual(0, s_second.Exit, s_second.Error);
        StringAssert.Contains(s_first.Output, "mode lora: r = 4");
        var manifest = PoolManifest.Read(s_pool);
        var shapes = manifest.Task("shapes");
        Assert.AreEqual("experts/shapes", shapes.Expert);
        Assert.IsTrue(PeftAdapterFolder.IsAdapter(Path.Combine(s_pool, shapes.Expert)));
        Assert.AreEqual(FineTuningModes.Lora, shapes.Training!.Mode);
        Assert.AreEqual(4, shapes.Training.Rank);
        Assert.AreEqual(8.0, shapes.Training.Alpha);
        Assert.AreEqual(5, shapes.Training.LoraSeed);
        CollectionAssert.AreEqual(new[] { "q_proj", "v_proj", "fc1" }, manifest.Task("stripes").Training!.Targets!.ToArray());
        using (var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(s_pool, "experts", "shapes.json"))))
            Assert.AreEqual(2L * Config.Layers * 2 * 4 * Config.Width, report.RootElement.GetProperty("trainable_parameters").GetInt64());

        var (exit, output, error) = CliRunner.Run("eval", "--model", Path.Combine(s_pool, shapes.Expert), "--zoo", s_pool, "--task", "shapes");
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, (100 * shapes.Individual.Test).ToString("F1", System.Globalization.CultureInfo.InvariantCulture));
        using var pool = ExpertPool.Load(s_pool);
        Assert.IsGreaterThan(0.6, shapes.Individual.Test);
        Assert.AreEqual(shapes.Individual.Test, ExpertTrainer.Accuracy(pool.Config, pool.Expert("shapes"), pool.Head("shapes"), pool.LoadData("shapes").Test), 1e-4);
    }

    [TestMethod]
    public void StreamingMergeOfAdapterFoldersEqualsTheMergeOfTheDensifiedExperts()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(s_pool);
        string basePath = Path.Combine(s_pool, PoolManifest.Read(s_pool).Pretrained!);
        var adapters = pool.Tasks.Select(t => Path.Combine(s_pool, t.Expert)).ToArray();
        foreach (var (method, parameters) in new[] { ("task-arithmetic", new[] { "--lambda", "0.4" }), ("ties", new[] { "--lambda", "0.5", "--keep", "0.3" }) })
        {
            string output = s_dir.File($"merged-{method}.safetensors");
            var args = new List<string> { "merge", "--method", method, "--base", basePath, "--out", output };
            foreach (var a in adapters) args.AddRange(["--expert", a]);
            args.AddRange(parameters);
            var (exit, _, error) = CliRunner.Run([.. args]);
            Assert.AreEqual(0, exit, error);

            var algorithm = MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(method == "ties" ? ["lambda=0.5", "keep=0.3"] : ["lambda=0.4"]));
            using var reference = new InMemoryMergeDriver().Merge(algorithm, pool.Pretrained, pool.Experts, expertNames: pool.TaskNames);
            using var streamed = Checkpoint.Open(output);
            foreach (var (name, expected) in reference.Merged)
            {
                using var actual = streamed.ReadTensor(name);
                Assert.IsLessThanOrEqualTo(1e-6, (actual - expected).abs().max().item<float>(), $"{method}: {name}");
            }
            string q0 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(0).QProj);
            Assert.IsGreaterThan(1e-5, (streamed.ReadTensor(q0) - pool.Pretrained[q0]).abs().max().item<float>(), "the adapters moved q_proj");
        }
    }

    [TestMethod]
    public void ALoraPoolRunsThroughTaskArithmeticInTheRegistry()
    {
        using var scope = NewDisposeScope();
        using var pool = ExpertPool.Load(s_pool);
        using var model = MergeAlgorithmRegistry.Default.Get("task-arithmetic").Run(pool, MergeParameters.Parse("lambda=0.5"), new AlgorithmContext());
        var weights = model.Parts[0].Exporter.Weights;
        string v1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).VProj);
        var expected = pool.Pretrained[v1].Plus(((pool.Expert("shapes")[v1] - pool.Pretrained[v1]).Plus(pool.Expert("stripes")[v1] - pool.Pretrained[v1])).Times(0.5));
        Assert.IsLessThanOrEqualTo(1e-6, (weights[v1] - expected).abs().max().item<float>());
        var test = pool.LoadData("shapes").Test;
        double accuracy = ExpertTrainer.Accuracy(pool.Config, weights, pool.Head("shapes"), test);
        Assert.IsGreaterThan(0.5, accuracy, "the merged model still separates the shapes");
    }

    /// <summary>
    /// Merging on the factors needs one shared initialisation and adapter experts only; methods with per-task weights do not
    /// declare the parameter. Each refusal says which file or expert and why.
    /// </summary>
    [TestMethod]
    public void FactorMergingRefusesAdaptersOfDifferentInitialisationsAndFullExperts()
    {
        using var scope = NewDisposeScope();
        var algorithm = MergeAlgorithmRegistry.Default.Get("task-arithmetic");
        using (var pool = ExpertPool.Load(s_pool))
        {
            var error = Assert.Throws<ArgumentException>(() => algorithm.Run(pool, MergeParameters.Parse("adapter-space=factors"), new AlgorithmContext()));
            StringAssert.Contains(error.Message, "share one initialisation");
            StringAssert.Contains(error.Message, "stripes has target_modules [q_proj, v_proj, fc1], ");
            StringAssert.Contains(error.Message, "stripes");
        }

        using (var full = ExpertPool.Load(CommittedZoo.Directory))
        {
            var error = Assert.Throws<ArgumentException>(() => algorithm.Run(full, MergeParameters.Parse("adapter-space=factors"), new AlgorithmContext()));
            StringAssert.Contains(error.Message, "is a full checkpoint");
            Assert.Throws<ArgumentException>(() => algorithm.Check(full, MergeParameters.Parse("adapter_space=Factors")), "Check refuses it before any work");
            StringAssert.Contains(error.Message, $"'{full.TaskNames[0]}'");
        }

        var tall = MergeAlgorithmRegistry.Default.Get("tall-masks");
        Assert.IsFalse(tall.Parameters.Any(p => p.Name == LoraMergeSpaces.ParameterName), "TALL masks gives each task its own weights");
        var refused = Assert.Throws<ArgumentException>(() => LoraFactorMerge.Merge(MergeMethodRegistry.Default.Create("tall-masks", MergeParameters.Empty),
            [Path.Combine(s_pool, PoolManifest.Read(s_pool).Task("shapes").Expert)], Config));
        StringAssert.Contains(refused.Message, "gives each task its own weights");
    }
}

