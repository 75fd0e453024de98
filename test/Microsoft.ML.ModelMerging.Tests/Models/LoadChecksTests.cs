using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Models;

/// <summary>
/// Issue 17 items 3 and 6: weights with NaN are refused where they are loaded (so eval cannot report chance accuracy
/// silently), and a head recorded for another task, or with other classes, is refused.
/// </summary>
[TestClass]
public sealed class LoadChecksTests
{
    [TestMethod]
    public void BackboneWithNaNIsRefusedNamingFileAndTensor()
    {
        using var dir = new TempDirectory();
        var config = ModelTestData.TinyGray();
        var weights = ModelTestData.RandomWeights(config, seed: 1);
        string poisoned = weights.Keys.Order(StringComparer.Ordinal).First(k => weights[k].numel() > 1);
        weights[poisoned][0] = float.NaN;
        string path = dir.File("nan.safetensors");
        ModelCheckpoints.SaveBackbone(path, config, weights);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => ModelCheckpoints.LoadBackbone(path).Dispose());
        Assert.AreEqual(poisoned, error.TensorName);
        StringAssert.Contains(error.Message, "nan.safetensors");
        StringAssert.Contains(error.Message, "non-finite");
    }

    private static string SaveHead(TempDirectory dir, string file, string[] classes, string? task)
    {
        using var head = ClassificationHead.CreateLinear(classes, 8, seed: 1);
        ModelCheckpoints.SaveHead(dir.File(file), head, task: task);
        return dir.File(file);
    }

    [TestMethod]
    public void HeadRecordsItsTaskAndClasses()
    {
        using var dir = new TempDirectory();
        string path = SaveHead(dir, "h.safetensors", ["a", "b"], "letters");
        using var checkpoint = Checkpoint.Open(path);
        Assert.AreEqual("letters", checkpoint.Metadata[ModelCheckpoints.HeadTaskMetadataKey]);
        Assert.AreEqual("""["a","b"]""", checkpoint.Metadata[ClassificationHead.ClassNamesMetadataKey]);
    }

    [TestMethod]
    public void HeadOfAnotherTaskIsRefused()
    {
        using var dir = new TempDirectory();
        string path = SaveHead(dir, "fashion.safetensors", ["shirt", "shoe"], "fashion-mnist");
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => ModelCheckpoints.LoadHead(path, expectedTask: "mnist").Dispose());
        StringAssert.Contains(error.Message, "trained for task 'fashion-mnist', not 'mnist'");
    }

    [TestMethod]
    public void HeadWithOtherClassesIsRefused()
    {
        using var dir = new TempDirectory();
        string path = SaveHead(dir, "h.safetensors", ["0", "1", "2"], task: null);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => ModelCheckpoints.LoadHead(path, "digits", ["0", "1"]).Dispose());
        StringAssert.Contains(error.Message, "head has 3 classes");
        StringAssert.Contains(error.Message, "task 'digits' has 2");
    }

    [TestMethod]
    public void OlderHeadWithoutTaskStillLoads()
    {
        using var dir = new TempDirectory();
        string path = SaveHead(dir, "old.safetensors", ["a", "b"], task: null);
        using var head = ModelCheckpoints.LoadHead(path, expectedTask: "letters", expectedClassNames: ["a", "b"]);
        Assert.AreEqual(2, head.ClassCount);
    }

    [TestMethod]
    public void HeadWithNaNIsRefused()
    {
        using var dir = new TempDirectory();
        using var weight = ones(2, 8);
        weight[1, 3] = float.PositiveInfinity;
        using var head = ClassificationHead.Linear(["a", "b"], weight, zeros(2));
        ModelCheckpoints.SaveHead(dir.File("inf.safetensors"), head);
        var error = Assert.ThrowsExactly<CheckpointFormatException>(() => ModelCheckpoints.LoadHead(dir.File("inf.safetensors")).Dispose());
        Assert.AreEqual(ClassificationHead.WeightName, error.TensorName);
    }
}
