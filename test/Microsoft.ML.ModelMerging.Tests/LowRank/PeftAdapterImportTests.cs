using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Tests.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

/// <summary>Adapters made elsewhere, registered with <c>mlmerge pool add</c>.</summary>
[TestClass]
public sealed class PeftAdapterImportTests
{
    /// <summary>
    /// An adapter this library cannot read (here DoRA) is refused by its field before the task's images are read and the
    /// linear probe is fitted, as a full expert of another architecture is.
    /// </summary>
    [TestMethod]
    public void AnUnreadableAdapterIsRefusedBeforeTheImagesAreRead()
    {
        using var dir = new TempDirectory();
        string committed = Path.Combine(CommittedZoo.Default, "lora", "experts", "scenes");
        if (!PeftAdapterFolder.IsAdapter(committed)) Assert.Inconclusive($"{committed} is not committed.");
        string adapter = dir.File("dora");
        Directory.CreateDirectory(adapter);
        File.Copy(Path.Combine(committed, PeftAdapterFolder.WeightsFileName), Path.Combine(adapter, PeftAdapterFolder.WeightsFileName));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(committed, PeftAdapterFolder.ConfigFileName)))!.AsObject();
        config["use_dora"] = true;
        File.WriteAllText(Path.Combine(adapter, PeftAdapterFolder.ConfigFileName), config.ToJsonString());
        TestImageFolders.Shapes(dir.File("shapes"), perClass: 10, seed: 1);

        var (exit, _, error) = CliRunner.Run("pool", "create", "--base", Path.Combine(CommittedZoo.Default, "pretrained.safetensors"), "--out", dir.File("pool"));
        Assert.AreEqual(0, exit, error);
        (exit, string output, error) = CliRunner.Run("pool", "add", "--zoo", dir.File("pool"), "--task", "shapes", "--images", dir.File("shapes"),
            "--expert", adapter, "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "use_dora = true");
        StringAssert.Contains(error, Path.Combine(adapter, PeftAdapterFolder.ConfigFileName));
        Assert.DoesNotContain("loading the images", output + error);
        Assert.DoesNotContain("linear probe", output + error);
    }
}
