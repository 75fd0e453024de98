using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Tests.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>
/// An adapter's <c>adapter_model.safetensors</c> given to <c>merge</c> as if it were a model is refused as what it is, even
/// with <c>--allow-missing</c>, under which it would otherwise count as an expert that changes nothing.
/// </summary>
[TestClass]
public sealed class AdapterWeightsAsExpertTests
{
    [TestMethod]
    public void MergeRefusesAnAdaptersWeightsGivenAsAModel()
    {
        string committed = Path.Combine(CommittedZoo.Default, "lora", "experts", "scenes");
        if (!PeftAdapterFolder.IsAdapter(committed)) Assert.Inconclusive($"{committed} is not committed.");
        using var dir = new TempDirectory();
        string adapter = dir.File("scenes");
        Directory.CreateDirectory(adapter);
        foreach (string name in new[] { PeftAdapterFolder.ConfigFileName, PeftAdapterFolder.WeightsFileName })
            File.Copy(Path.Combine(committed, name), Path.Combine(adapter, name));
        string weightsOnly = dir.File("weights-only");
        Directory.CreateDirectory(weightsOnly);
        File.Copy(Path.Combine(committed, PeftAdapterFolder.WeightsFileName), Path.Combine(weightsOnly, PeftAdapterFolder.WeightsFileName));

        (int, string, string) Merge(string expert) => CliRunner.Run("merge", "--method", "task-arithmetic", "--base", Path.Combine(CommittedZoo.Default, "pretrained.safetensors"),
            "--expert", expert, "--expert", Path.Combine(CommittedZoo.Default, "experts", "textures.safetensors"), "--allow-missing", "--out", dir.File("merged.safetensors"));

        var (exit, _, error) = Merge(Path.Combine(adapter, PeftAdapterFolder.WeightsFileName));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "lora_A.weight");
        StringAssert.Contains(error, $"give the adapter folder {adapter} as the expert");

        (exit, _, error) = Merge(weightsOnly);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "an adapter expert is a PEFT folder with its adapter_config.json");
        Assert.IsFalse(File.Exists(dir.File("merged.safetensors")), "nothing written");

        (exit, _, error) = Merge(adapter);
        Assert.AreEqual(0, exit, error);
    }
}
