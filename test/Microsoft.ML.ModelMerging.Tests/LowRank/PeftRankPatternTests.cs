using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// PEFT's <c>rank_pattern</c> and <c>alpha_pattern</c> (a rank or alpha per module, the first key matching the end of the
/// module's name): each module's ΔW is (its alpha / its r)·B·A, or over √r with rsLoRA, checked against the file's factors.
/// </summary>
[TestClass]
public sealed class PeftRankPatternTests
{
    private static VisionTransformerConfig Config => ModelCheckpoints.ReadConfig(Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"));

    /// <summary>A PEFT folder written by hand: q_proj and v_proj of every layer, q_proj of rank 4 and v_proj of rank 2.</summary>
    private static string Folder(TempDirectory dir, string name, bool rsLora, int qRank = 4)
    {
        string folder = dir.File(name);
        Directory.CreateDirectory(folder);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["r"] = 2,
            ["lora_alpha"] = 4,
            ["target_modules"] = new JsonArray("v_proj", "q_proj"),
            ["rank_pattern"] = new JsonObject { ["q_proj"] = qRank },
            ["alpha_pattern"] = new JsonObject { ["layers.1.self_attn.v_proj"] = 3, ["v_proj"] = 5 },
            ["use_rslora"] = rsLora,
            ["bias"] = "none",
        };
        File.WriteAllText(Path.Combine(folder, PeftAdapterFolder.ConfigFileName), config.ToJsonString());
        var tensors = new Dictionary<string, Tensor>();
        ulong seed = 3;
        for (int layer = 0; layer < Config.Layers; layer++)
        {
            foreach (var (prefix, rank) in new[] { (VisionTransformerNames.Layer(layer).QProj, 4), (VisionTransformerNames.Layer(layer).VProj, 2) })
            {
                tensors[PeftAdapterFolder.NameOfA(prefix)] = randn([rank, Config.Width], generator: new Generator(seed++));
                tensors[PeftAdapterFolder.NameOfB(prefix)] = randn([Config.Width, rank], generator: new Generator(seed++)).Times(0.1);
            }
        }
        SafeTensorsWriter.Save(Path.Combine(folder, PeftAdapterFolder.WeightsFileName), tensors);
        return folder;
    }

    /// <summary>The scale PEFT gives each module of <see cref="Folder"/>: the first alpha_pattern key that matches wins.</summary>
    private static double ExpectedScale(string prefix, bool rsLora)
    {
        bool q = prefix.EndsWith(".q_proj", StringComparison.Ordinal);
        double alpha = q ? 4 : prefix.EndsWith("layers.1.self_attn.v_proj", StringComparison.Ordinal) ? 3 : 5;
        double rank = q ? 4 : 2;
        return rsLora ? alpha / Math.Sqrt(rank) : alpha / rank;
    }

    private static void AssertDeltas(string folder, bool rsLora)
    {
        using var scope = NewDisposeScope();
        using var loaded = PeftAdapterFolder.Load(folder, Config);
        using var file = Checkpoint.Open(Path.Combine(folder, PeftAdapterFolder.WeightsFileName));
        Assert.HasCount(2 * Config.Layers, loaded.Modules);
        foreach (var m in loaded.Modules)
        {
            string prefix = m.Target.Prefix;
            var expected = file.ReadTensor(PeftAdapterFolder.NameOfB(prefix)).to_type(ScalarType.Float64)
                .matmul(file.ReadTensor(PeftAdapterFolder.NameOfA(prefix)).to_type(ScalarType.Float64)).Times(ExpectedScale(prefix, rsLora));
            Assert.IsLessThanOrEqualTo(1e-6, (loaded.Delta(prefix).to_type(ScalarType.Float64) - expected).abs().max().item<double>(), prefix);
        }
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void EachModuleHasTheRankAndAlphaOfItsPattern(bool rsLora)
    {
        using var dir = new TempDirectory();
        AssertDeltas(Folder(dir, "adapter", rsLora), rsLora);
    }

    [TestMethod]
    public void APatternRankTheFactorsDoNotHaveIsNamed()
    {
        using var dir = new TempDirectory();
        string folder = Folder(dir, "adapter", rsLora: false, qRank: 8);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => PeftAdapterFolder.Load(folder, Config));
        StringAssert.Contains(error.Message, "expected [8, ");
        StringAssert.Contains(error.Message, "r = 8 from rank_pattern");
    }

    /// <summary>
    /// Adapters of one initialisation with patterns merge on their factors, and the merged adapter keeps the patterns: read
    /// back, each module has its own rank and scale.
    /// </summary>
    [TestMethod]
    public void FactorMergeKeepsThePatterns()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDirectory();
        var options = new LoraOptions
        {
            Rank = 2, Alpha = 4, Targets = ["q_proj", "v_proj"], Seed = 1,
            RankPattern = [KeyValuePair.Create("q_proj", 4)], AlphaPattern = [KeyValuePair.Create("v_proj", 5.0)],
        };
        string[] folders = [dir.File("a"), dir.File("b")];
        ulong seed = 7;
        foreach (string folder in folders)
        {
            using var adapter = LoraAdapter.Initialize(Config, options);
            using (no_grad())
                foreach (var m in adapter.Modules) m.B.copy_(randn(m.B.shape, generator: new Generator(seed++)).Times(0.1));
            PeftAdapterFolder.Save(adapter, folder);
        }
        var method = MergeMethodRegistry.Default.Create("task-arithmetic", MergeParameters.Parse("lambda=0.5"));
        using var merged = LoraFactorMerge.Merge(method, folders, Config);
        PeftAdapterFolder.Save(merged, dir.File("merged"));
        using var loaded = PeftAdapterFolder.Load(dir.File("merged"), Config);
        using var file = Checkpoint.Open(Path.Combine(dir.File("merged"), PeftAdapterFolder.WeightsFileName));
        foreach (var m in loaded.Modules)
        {
            bool q = m.Target.Prefix.EndsWith(".q_proj", StringComparison.Ordinal);
            Assert.AreEqual(q ? 4L : 2L, m.A.shape[0], m.Target.Prefix);
            var expected = file.ReadTensor(PeftAdapterFolder.NameOfB(m.Target.Prefix)).to_type(ScalarType.Float64)
                .matmul(file.ReadTensor(PeftAdapterFolder.NameOfA(m.Target.Prefix)).to_type(ScalarType.Float64)).Times(q ? 4.0 / 4 : 5.0 / 2);
            Assert.IsLessThanOrEqualTo(1e-6, (loaded.Delta(m.Target.Prefix).to_type(ScalarType.Float64) - expected).abs().max().item<double>(), m.Target.Prefix);
        }
    }
}
