using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Cli;

[TestClass]
public sealed class InspectCommandTests
{
    [TestMethod]
    public void InspectPrintsTensorsParametersAndMetadata()
    {
        using var dir = new TempDirectory();
        using var w = torch.zeros(3, 4);
        using var b = torch.zeros(3);
        SafeTensorsWriter.Save(dir.File("m.safetensors"), new Dictionary<string, torch.Tensor> { ["fc.weight"] = w, ["fc.bias"] = b },
            new Dictionary<string, string> { ["mlmerge.kind"] = "demo" }, SafeTensorsDType.BF16);

        var (exit, output, _) = CliRunner.Run("inspect", dir.Path);
        Assert.AreEqual(0, exit);
        StringAssert.Contains(output, "fc.weight");
        StringAssert.Contains(output, "BF16");
        StringAssert.Contains(output, "[3, 4]");
        StringAssert.Contains(output, "2 tensors, 15 parameters, 30 bytes of data");
        StringAssert.Contains(output, "mlmerge.kind = demo");

        var (jsonExit, json, _) = CliRunner.Run("inspect", dir.File("m.safetensors"), "--json");
        Assert.AreEqual(0, jsonExit);
        using var document = JsonDocument.Parse(json);
        Assert.AreEqual(15, document.RootElement.GetProperty("parameters").GetInt64());
        var tensors = document.RootElement.GetProperty("tensors").EnumerateArray().ToList();
        Assert.AreEqual("fc.bias", tensors[0].GetProperty("name").GetString());
        Assert.AreEqual(12, tensors[1].GetProperty("parameters").GetInt64());
        Assert.AreEqual("demo", document.RootElement.GetProperty("metadata").GetProperty("mlmerge.kind").GetString());
    }

    [TestMethod]
    public void InspectReportsABadFileAsOneClearLine()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("broken.safetensors"), new byte[] { 1, 0, 0, 0, 0, 0, 0, 0, (byte)'{' });
        var (exit, _, error) = CliRunner.Run("inspect", dir.File("broken.safetensors"));
        Assert.AreEqual(1, exit);
        StringAssert.StartsWith(error, "error: " + dir.File("broken.safetensors") + ": header is not valid JSON");
    }
}
