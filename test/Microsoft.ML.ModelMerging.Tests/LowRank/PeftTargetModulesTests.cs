using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// PEFT's <c>target_modules</c> in the forms PEFT writes besides a list of short names: a pattern matched against each
/// module's full name (<c>re.fullmatch</c>, no <c>layers_to_transform</c>), names matched by their end
/// (<c>self_attn.q_proj</c>, with <c>layers_to_transform</c>), and <c>all-linear</c>. Each adapted layer's ΔW is checked
/// against (alpha/r)·B·A computed from the file's factors.
/// </summary>
[TestClass]
public sealed class PeftTargetModulesTests
{
    private static VisionTransformerConfig Config => ModelCheckpoints.ReadConfig(Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"));

    /// <summary>An adapter of <paramref name="options"/> with random B, whose config's target fields are then rewritten.</summary>
    private static string Adapter(TempDirectory dir, string name, LoraOptions options, Action<JsonObject> edit)
    {
        using var adapter = LoraAdapter.Initialize(Config, options);
        using (no_grad())
        {
            ulong seed = 11;
            foreach (var m in adapter.Modules) m.B.copy_(randn(m.B.shape, generator: new Generator(seed++)).Times(0.1));
        }
        string folder = dir.File(name);
        PeftAdapterFolder.Save(adapter, folder);
        string configPath = Path.Combine(folder, PeftAdapterFolder.ConfigFileName);
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        edit(config);
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }

    /// <summary>The adapted prefixes and each one's ΔW = (alpha/r)·B·A from the file, in float64.</summary>
    private static void AssertDeltas(string folder, IReadOnlyCollection<string> expectedPrefixes, double scale)
    {
        using var scope = NewDisposeScope();
        using var loaded = PeftAdapterFolder.Load(folder, Config);
        CollectionAssert.AreEquivalent(expectedPrefixes.ToList(), loaded.Modules.Select(m => m.Target.Prefix).ToList());
        using var file = Checkpoint.Open(Path.Combine(folder, PeftAdapterFolder.WeightsFileName));
        foreach (string prefix in expectedPrefixes)
        {
            var a = file.ReadTensor(PeftAdapterFolder.NameOfA(prefix)).to_type(ScalarType.Float64);
            var b = file.ReadTensor(PeftAdapterFolder.NameOfB(prefix)).to_type(ScalarType.Float64);
            var expected = b.matmul(a).Times(scale);
            Assert.IsLessThanOrEqualTo(1e-6, (loaded.Delta(prefix).to_type(ScalarType.Float64) - expected).abs().max().item<double>(), prefix);
        }
    }

    private static string[] Prefixes(IEnumerable<int> layers, params string[] modules) =>
        [.. layers.SelectMany(l => VisionTransformerNames.Layer(l).Linears.Where(p => modules.Contains(LoraOptions.ShortName(p))))];

    [TestMethod]
    public void APatternIsMatchedAgainstFullModuleNamesWithoutLayersToTransform()
    {
        using var dir = new TempDirectory();
        string folder = Adapter(dir, "pattern", new LoraOptions { Rank = 4, Alpha = 8, Targets = ["q_proj", "v_proj"], Layers = [1, 2] }, c =>
        {
            c["target_modules"] = @"vision_model\.encoder\.layers\.[12]\.self_attn\.(q_proj|v_proj)";
            c["layers_to_transform"] = null;
        });
        AssertDeltas(folder, Prefixes([1, 2], "q_proj", "v_proj"), 8.0 / 4);

        // PEFT applies no layers_to_transform to a pattern: the pattern alone says which layers are adapted.
        string every = Adapter(dir, "every", new LoraOptions { Rank = 4, Alpha = 8, Targets = ["q_proj", "v_proj"] }, c =>
        {
            c["target_modules"] = @".*vision_model.*\.(q_proj|v_proj)";
            c["layers_to_transform"] = new JsonArray(0);
        });
        AssertDeltas(every, Prefixes(Enumerable.Range(0, Config.Layers), "q_proj", "v_proj"), 8.0 / 4);
    }

    [TestMethod]
    public void NamesMatchedByTheirEndAndAllLinearAreRead()
    {
        using var dir = new TempDirectory();
        string suffixes = Adapter(dir, "suffixes", new LoraOptions { Rank = 2, Alpha = 6, Targets = ["q_proj", "fc1"], Layers = [2, 3] }, c =>
            c["target_modules"] = new JsonArray("self_attn.q_proj", "mlp.fc1"));
        AssertDeltas(suffixes, Prefixes([2, 3], "q_proj", "fc1"), 6.0 / 2);

        string all = Adapter(dir, "all", new LoraOptions { Rank = 2, Alpha = 2, Targets = [.. LoraOptions.KnownTargets], UseRsLora = true }, c =>
            c["target_modules"] = "all-linear");
        AssertDeltas(all, Prefixes(Enumerable.Range(0, Config.Layers), [.. LoraOptions.KnownTargets]), 2.0 / Math.Sqrt(2));
    }

    /// <summary>PEFT's exclude_modules leaves modules out of the targets before they are matched, as a list or as a pattern.</summary>
    [TestMethod]
    public void ExcludedModulesAreLeftOut()
    {
        using var dir = new TempDirectory();
        string list = Adapter(dir, "list", new LoraOptions { Rank = 2, Alpha = 4, Targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"] }, c =>
        {
            c["target_modules"] = "all-linear";
            c["exclude_modules"] = new JsonArray("fc2");
        });
        AssertDeltas(list, Prefixes(Enumerable.Range(0, Config.Layers), "q_proj", "k_proj", "v_proj", "out_proj", "fc1"), 4.0 / 2);

        string pattern = Adapter(dir, "pattern", new LoraOptions { Rank = 2, Alpha = 4, Targets = ["q_proj", "v_proj"], Layers = [1, 2, 3] }, c =>
        {
            c["layers_to_transform"] = null;
            c["exclude_modules"] = @".*layers\.0\..*";
        });
        AssertDeltas(pattern, Prefixes([1, 2, 3], "q_proj", "v_proj"), 4.0 / 2);

        // Excluding a module the factors adapt: its tensors are then refused by name.
        string wrong = Adapter(dir, "wrong", new LoraOptions { Rank = 2, Alpha = 4, Targets = ["q_proj", "v_proj"] }, c => c["exclude_modules"] = new JsonArray("v_proj"));
        StringAssert.Contains(Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(wrong, Config)).Message, "v_proj");
    }

    [TestMethod]
    public void PatternsThisReaderCannotStateAreRefusedByName()
    {
        using var dir = new TempDirectory();
        var options = new LoraOptions { Rank = 2, Alpha = 4, Targets = ["q_proj"], Layers = [0] };
        string uneven = Adapter(dir, "uneven", options, c => c["target_modules"] = @".*layers\.0\.self_attn\.q_proj|.*layers\.1\.self_attn\.v_proj");
        var error = Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.Load(uneven, Config));
        StringAssert.Contains(error.Message, "(layer 0: q_proj; layer 1: v_proj)");

        string none = Adapter(dir, "none", options, c => c["target_modules"] = ".*query");
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.Load(none, Config)).Message,
            "target_modules '.*query' selects no linear layer of the vision encoder");

        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => PeftAdapterFolder.ReadOptions(none)).Message,
            "read the adapter with the model it adapts");

        // A CLIPModel adapter of both towers: the text tower's factors are named as such.
        string both = Adapter(dir, "both", options, _ => { });
        string weights = Path.Combine(both, PeftAdapterFolder.WeightsFileName);
        Dictionary<string, Tensor> tensors;
        using (var file = Checkpoint.Open(weights)) tensors = file.ReadAll();
        tensors[PeftAdapterFolder.NamePrefix + "text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = zeros(2, 64);
        SafeTensorsWriter.Save(weights, tensors);
        StringAssert.Contains(Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(both, Config)).Message, "a factor of CLIP's text tower");
    }
}
