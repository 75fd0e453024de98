using System.Globalization;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

[TestClass]
public sealed class ZooCommandsTests
{
    /// <summary>`eval` prints what an independent computation gets: forward, head, arg-max and counting done here by hand.</summary>
    [TestMethod]
    public void EvalPrintsTheDirectlyComputedAccuracy()
    {
        string zoo = CommittedZoo.Directory;
        var (exit, output, error) = CliRunner.Run("eval", "--model", Path.Combine(zoo, "experts", "fashion-mnist.safetensors"), "--zoo", zoo,
            "--task", "fashion-mnist", "--split", "val");
        Assert.AreEqual(0, exit, error);

        using var experts = ExpertPool.Load(zoo, new[] { "fashion-mnist" });
        var data = experts.LoadData("fashion-mnist").Validation;
        using var images = data.ToTensor();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = experts.Head("fashion-mnist").Forward(VisionTransformer.Forward(experts.Config, experts.Expert("fashion-mnist"), images));
        var scores = logits.data<float>().ToArray();
        var labels = data.Labels.ToArray();
        int classes = data.ClassCount, correct = 0;
        for (int i = 0; i < labels.Length; i++)
        {
            int best = 0;
            for (int c = 1; c < classes; c++) if (scores[i * classes + c] > scores[i * classes + best]) best = c;
            if (best == labels[i]) correct++;
        }
        string expected = (100.0 * correct / labels.Length).ToString("F1", CultureInfo.InvariantCulture);
        StringAssert.Matches(output, new System.Text.RegularExpressions.Regex($@"fashion-mnist\s+{System.Text.RegularExpressions.Regex.Escape(expected)}\s"));
    }

    [TestMethod]
    public void EvalRejectsAnUnknownTask()
    {
        var (exit, _, error) = CliRunner.Run("eval", "--model", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"), "--zoo", CommittedZoo.Directory, "--task", "cifar");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "The pool has no task 'cifar'");
    }

    /// <summary>Two classes of shapes drawn by the test: an expert made by `finetune` must beat chance clearly.</summary>
    [TestMethod]
    public void FinetuneOnATwoClassImageFolderBeatsChance()
    {
        using var dir = new TempDirectory();
        TestImageFolders.Shapes(dir.File("shapes"), perClass: 40, seed: 3);

        var (exit, output, error) = CliRunner.Run("finetune", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"),
            "--task", dir.File("shapes"), "--out", dir.File("expert"), "--epochs", "3");
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "2 classes");

        using var expert = ModelCheckpoints.LoadBackbone(dir.File("expert/expert.safetensors"));
        using var head = ModelCheckpoints.LoadHead(dir.File("expert/head.safetensors"));
        CollectionAssert.AreEqual(new[] { "bar", "ring" }, head.ClassNames.ToArray());
        var splits = ImageFolderTask.Load(dir.File("shapes"), 28, 1);
        double accuracy = ExpertTrainer.Accuracy(expert.Config, expert.Weights, head, splits.Test);
        Assert.IsGreaterThanOrEqualTo(0.8, accuracy, $"test accuracy {accuracy}");
    }
}
