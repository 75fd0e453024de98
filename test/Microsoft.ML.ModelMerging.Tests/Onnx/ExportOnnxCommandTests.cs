using Microsoft.ML.ModelMerging.Cli;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

[TestClass]
public sealed class ExportOnnxCommandTests
{
    private static (int Exit, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = MlmergeCommand.Run(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }

    /// <summary>A backbone checkpoint (with merge provenance in its metadata) and two head checkpoints in <paramref name="dir"/>.</summary>
    private static VisionTransformerConfig WriteCheckpoints(TempDirectory dir)
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(layers: 1, activation: VisionActivation.Gelu, projectionDim: 6);
        ModelCheckpoints.SaveBackbone(dir.File("merged.safetensors"), config, ModelTestData.RandomWeights(config, seed: 41),
            new Dictionary<string, string> { ["mlmerge.merge_method"] = "task_arithmetic", ["unrelated"] = "x" });
        using (var digits = ClassificationHead.CreateLinear(["0", "1", "2"], config.FeatureDim, seed: 42))
        {
            ModelCheckpoints.SaveHead(dir.File("digits.safetensors"), digits);
        }

        using (var letters = ClassificationHead.Clip(["A", "B"], randn(2, config.FeatureDim, generator: new TorchSharp.torch.Generator(43))))
        {
            ModelCheckpoints.SaveHead(dir.File("letters.safetensors"), letters);
        }

        return config;
    }

    [TestMethod]
    public void ExportWritesAModelThatMatchesTheCheckpoints()
    {
        using var dir = new TempDirectory();
        var config = WriteCheckpoints(dir);
        string onnx = dir.File("out/model.onnx");

        var (exit, output, error) = Run("export-onnx", "--model", dir.File("merged.safetensors"),
            "--head", "digits=" + dir.File("digits.safetensors"), "--head", "letters=" + dir.File("letters.safetensors"),
            "--out", onnx, "--scores", "logits");

        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "exported 2 task(s) (digits, letters)");
        StringAssert.Contains(output, onnx);
        CollectionAssert.AreEqual(new[] { onnx }, Directory.GetFiles(dir.File("out")));

        using var scope = NewDisposeScope();
        using var backbone = ModelCheckpoints.LoadBackbone(dir.File("merged.safetensors"));
        using var digits = ModelCheckpoints.LoadHead(dir.File("digits.safetensors"));
        using var letters = ModelCheckpoints.LoadHead(dir.File("letters.safetensors"));
        Tensor pixels = ModelTestData.Images(config, batch: 4, seed: 44).reshape(4, -1);
        Tensor features = VisionTransformer.Forward(config, backbone.Weights, pixels);
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        var outputs = runner.Run("pixels", pixels);
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs["scores_digits"], digits.Forward(features)));
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs["scores_letters"], letters.Forward(features)));
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs["features"], features));

        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("task_arithmetic", metadata["mlmerge.merge_method"]);
        Assert.IsFalse(metadata.ContainsKey("unrelated"));
        var info = VitOnnxModelInfo.FromMetadata(metadata);
        Assert.AreEqual(OnnxScoreKind.Logits, info.Scores);
        CollectionAssert.AreEqual(new[] { "A", "B" }, info.Tasks[1].ClassNames.ToArray());
    }

    [TestMethod]
    public void WithoutHeadsTheZooGivesEveryTasksHead()
    {
        using var dir = new TempDirectory();
        string zoo = Zoo.CommittedZoo.Directory;
        string onnx = dir.File("model.onnx");
        var manifest = ModelMerging.Pools.PoolManifest.Read(zoo);

        var (exit, output, error) = Run("export-onnx", "--model", Path.Combine(zoo, "pretrained.safetensors"), "--zoo", zoo, "--out", onnx, "--scores", "logits");

        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, $"exported {manifest.Tasks.Count} task(s) ({string.Join(", ", manifest.Tasks.Select(t => t.Name))})");
        using var scope = NewDisposeScope();
        using var backbone = ModelCheckpoints.LoadBackbone(Path.Combine(zoo, "pretrained.safetensors"));
        var task = manifest.Tasks[^1];
        using var head = ModelCheckpoints.LoadHead(Path.Combine(zoo, task.Head));
        Tensor pixels = ModelTestData.Images(backbone.Config, batch: 3, seed: 45).reshape(3, -1);
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        var outputs = runner.Run("pixels", pixels);
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs[OnnxTaskHead.ScoresOutputName(task.Name)],
            head.Forward(VisionTransformer.Forward(backbone.Config, backbone.Weights, pixels))));

        var (withHeads, _, headsError) = Run("export-onnx", "--model", Path.Combine(zoo, "pretrained.safetensors"), "--zoo", zoo,
            "--head", $"{task.Name}={Path.Combine(zoo, task.Head)}", "--out", onnx);
        Assert.AreNotEqual(0, withHeads);
        StringAssert.Contains(headsError, "with --head, leave it out");
    }

    /// <summary>A merge's output records its experts: export adds the heads of those tasks only, unless every head is asked for.</summary>
    [TestMethod]
    public void AMergedCheckpointGetsTheHeadsOfItsExpertsOnly()
    {
        using var dir = new TempDirectory();
        string zoo = Zoo.CommittedZoo.Directory;
        string merged = dir.File("merged.safetensors");
        var (exit, _, error) = Run("merge", "--method", "task-arithmetic", "--base", Path.Combine(zoo, "pretrained.safetensors"),
            "--expert", Path.Combine(zoo, "experts", "fashion-mnist.safetensors"), "--expert", Path.Combine(zoo, "experts", "mnist.safetensors"), "--out", merged);
        Assert.AreEqual(0, exit, error);

        (exit, var output, error) = Run("export-onnx", "--model", merged, "--zoo", zoo, "--out", dir.File("two.onnx"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "exported 2 task(s) (mnist, fashion-mnist)", "in the pool's task order");

        (exit, output, error) = Run("export-onnx", "--model", merged, "--zoo", zoo, "--all-heads", "--out", dir.File("all.onnx"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, $"exported {ModelMerging.Pools.PoolManifest.Read(zoo).Tasks.Count} task(s)");
    }

    [TestMethod]
    public void Fp16AndNoFeaturesOptionsReachTheModel()
    {
        using var dir = new TempDirectory();
        WriteCheckpoints(dir);
        string[] common = ["export-onnx", "--model", dir.File("merged.safetensors"), "--head", "digits=" + dir.File("digits.safetensors")];

        Assert.AreEqual(0, Run([.. common, "--out", dir.File("full.onnx")]).Exit);
        var (exit, _, error) = Run([.. common, "--out", dir.File("half.onnx"), "--fp16", "--no-features"]);

        Assert.AreEqual(0, exit, error);
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(dir.File("half.onnx")));
        CollectionAssert.AreEqual(new[] { "scores_digits" }, runner.Session.OutputNames.ToArray());
        var info = VitOnnxModelInfo.FromMetadata(runner.Session.ModelMetadata.CustomMetadataMap);
        Assert.AreEqual(OnnxWeightPrecision.Float16, info.WeightPrecision);
        Assert.AreEqual(OnnxScoreKind.Probabilities, info.Scores);
        Assert.IsLessThan(new FileInfo(dir.File("full.onnx")).Length, new FileInfo(dir.File("half.onnx")).Length);
    }

    [TestMethod]
    public void BadArgumentsAreOneLineErrorsAndLeaveNoFile()
    {
        using var dir = new TempDirectory();
        WriteCheckpoints(dir);
        string model = dir.File("merged.safetensors"), head = "digits=" + dir.File("digits.safetensors"), onnx = dir.File("model.onnx");

        (string[] Args, string Message)[] cases =
        [
            (["export-onnx", "--model", model, "--head", head], "error: --out is required."),
            (["export-onnx", "--head", head, "--out", onnx], "error: --model is required."),
            (["export-onnx", "--model", model, "--out", onnx], "error: At least one task head is needed"),
            (["export-onnx", "--model", model, "--head", dir.File("digits.safetensors"), "--out", onnx], "must be given as <task>=<head.safetensors>"),
            (["export-onnx", "--model", model, "--head", head, "--head", head, "--out", onnx], "error: Task 'digits' is given 2 times"),
            (["export-onnx", "--model", model, "--head", "bad task=" + dir.File("digits.safetensors"), "--out", onnx], "error: Task name 'bad task' is not allowed"),
            (["export-onnx", "--model", model, "--head", "digits=" + model, "--out", onnx], $"error: {model}: not a classification head"),
            (["export-onnx", "--model", model, "--head", "digits=" + dir.File("missing.safetensors"), "--out", onnx], "error: "),
            (["export-onnx", "--model", model, "--head", head, "--out", onnx, "--scores", "odds"], "error: --scores must be 'probabilities' or 'logits'"),
        ];
        foreach (var (args, message) in cases)
        {
            var (exit, _, error) = Run(args);
            Assert.AreEqual(1, exit, string.Join(' ', args));
            StringAssert.Contains(error, message);
            Assert.AreEqual(1, error.TrimEnd().Split('\n').Length, error);
        }

        // A head of the wrong width fails in the exporter, before anything is written.
        using (var wide = ClassificationHead.CreateLinear(["x"], 7, seed: 1))
        {
            ModelCheckpoints.SaveHead(dir.File("wide.safetensors"), wide);
        }

        var (wideExit, _, wideError) = Run("export-onnx", "--model", model, "--head", "wide=" + dir.File("wide.safetensors"), "--out", onnx);
        Assert.AreEqual(1, wideExit);
        StringAssert.Contains(wideError, "the head of task 'wide' takes 7 features but the backbone produces 6");
        Assert.IsFalse(Directory.GetFiles(dir.Path).Any(f => f.EndsWith(".onnx", StringComparison.Ordinal) || f.EndsWith(".partial", StringComparison.Ordinal)));
    }
}
