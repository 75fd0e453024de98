using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>
/// Router files (<see cref="WeightEnsemblingRouterFile"/>) and <c>mlmerge export-onnx --wemoe-routers</c> on the committed
/// zoo: the model is rebuilt from the zoo's pre-trained model and experts, the routers loaded, and the ONNX model must
/// compute what the TorchSharp model that saved the routers computes.
/// </summary>
[TestClass]
public sealed class WeightEnsemblingOnnxExportTests
{
    private static readonly string[] Tasks = ["optical-digits", "mnist", "glyph-letters"];

    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    /// <summary>A WEMoE model over three of the zoo's experts (not in zoo order) with routers moved off their initialisation.</summary>
    private static WeightEnsemblingMoE TrainedModel(ExpertPool experts, WeightEnsemblingOptions options)
    {
        var model = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, options);
        var generator = new Generator(17);
        using var noGrad = no_grad();
        foreach (var (_, parameter) in model.RouterParameters.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            parameter.PlusInPlace(randn(parameter.shape, generator: generator).Times(0.3));
        }

        return model;
    }

    private static void AssertMatches(string onnx, WeightEnsemblingMoE model, ExpertPool experts, int batch)
    {
        using var scope = NewDisposeScope();
        Tensor pixels = ModelTestData.Images(experts.Config, batch, seed: 60 + batch).reshape(batch, -1);
        Tensor features = model.Forward(pixels);
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        bool probabilities = VitOnnxModelInfo.FromMetadata(runner.Session.ModelMetadata.CustomMetadataMap).Scores == OnnxScoreKind.Probabilities;
        var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs[DenseVitOnnxExporter.FeaturesName], features));
        foreach (string task in experts.TaskNames)
        {
            Tensor logits = experts.Head(task).Forward(features);
            Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs[OnnxTaskHead.ScoresOutputName(task)], probabilities ? softmax(logits, 1) : logits), task);
        }
    }

    [TestMethod]
    public void ExportFromARoutersDirectoryRebuildsTheModelFromTheZoo()
    {
        using var dir = new TempDirectory();
        string zoo = CommittedZoo.Directory;
        using var experts = ExpertPool.Load(zoo, Tasks);
        using var model = TrainedModel(experts, new WeightEnsemblingOptions());
        model.SaveRouters(dir.File("adapt/" + WeightEnsemblingRouterFile.FileName), WeightEnsemblingRouterFile.TaskMetadata(Tasks));
        string onnx = dir.File("wemoe.onnx");

        var (exit, output, error) = CliRunner.Run("export-onnx", "--wemoe-routers", dir.File("adapt"), "--zoo", zoo, "--out", onnx, "--scores", "logits");

        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "exported WEMoE (3 experts, depth-2 router per block) with 3 task(s) (optical-digits, mnist, glyph-letters)");
        StringAssert.Contains(output, onnx);
        AssertMatches(onnx, model, experts, batch: 1);
        AssertMatches(onnx, model, experts, batch: 6);

        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("wemoe", metadata[VitOnnxModelInfo.ModelKindKey]);
        Assert.AreEqual("[\"optical-digits\",\"mnist\",\"glyph-letters\"]", metadata[WeightEnsemblingRouterFile.TasksMetadataKey]);
        CollectionAssert.AreEqual(Tasks, VitOnnxModelInfo.FromMetadata(metadata).Tasks.Select(t => t.Name).ToArray());

        // Float16 task vectors: a smaller file, the same model within the float16 rounding of τ.
        string half = dir.File("wemoe-fp16tv.onnx");
        var (halfExit, _, halfError) = CliRunner.Run("export-onnx", "--wemoe-routers", dir.File("adapt/routers.safetensors"), "--zoo", zoo,
            "--out", half, "--fp16-task-vectors");
        Assert.AreEqual(0, halfExit, halfError);
        Assert.IsLessThan(0.75 * new FileInfo(onnx).Length, new FileInfo(half).Length);
        using var halfRunner = new OnnxRuntimeRunner(File.ReadAllBytes(half));
        Assert.AreEqual("float16", halfRunner.Session.ModelMetadata.CustomMetadataMap[WeightEnsemblingOnnxExporter.TaskVectorPrecisionKey]);

        // The form for `mlmerge adapt`'s output (--model <dir> --zoo <dir>, with --fp16-experts) writes the same model.
        string viaModel = dir.File("wemoe-model-form.onnx");
        var (modelExit, modelOutput, modelError) = CliRunner.Run("export-onnx", "--model", dir.File("adapt"), "--zoo", zoo, "--out", viaModel, "--fp16-experts");
        Assert.AreEqual(0, modelExit, modelError);
        StringAssert.Contains(modelOutput, "exported WEMoE (3 experts");
        CollectionAssert.AreEqual(File.ReadAllBytes(half), File.ReadAllBytes(viaModel));
    }

    [TestMethod]
    public void AnAdaptationCheckpointExportsWithItsTasksAndProvenance()
    {
        using var dir = new TempDirectory();
        string zoo = CommittedZoo.Directory;
        using var experts = ExpertPool.Load(zoo, Tasks);
        var options = WeightEnsemblingOptions.Efficient() with { RouterDepth = 1 };
        using var model = TrainedModel(experts, options);
        var tasks = Tasks.Select((t, i) => new AdaptationTask(t, ModelTestData.Images(experts.Config, 8, seed: 70 + i), experts.Head(t))).ToList();
        string checkpoint = dir.File("run/checkpoint.safetensors");
        TestTimeAdaptation.Run(model, tasks, TestTimeAdaptationOptions.ForWeightEnsembling() with
        {
            Steps = 2, BatchSizePerTask = 4, LearningRate = 1e-2, CheckpointPath = checkpoint, CheckpointEvery = 1,
        });

        var file = WeightEnsemblingRouterFile.Open(dir.File("run"));
        Assert.AreEqual(checkpoint, file.Path);
        CollectionAssert.AreEqual(Tasks, file.Tasks!.ToArray());
        Assert.AreEqual(options, file.Options);
        Assert.AreEqual(3, file.ExpertCount);

        string onnx = dir.File("ewemoe.onnx");
        var (exit, output, error) = CliRunner.Run("export-onnx", "--wemoe-routers", dir.File("run"), "--zoo", zoo, "--out", onnx);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "exported WEMoE (3 experts, depth-1 shared router, task vectors pruned to 10%)");
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        Assert.AreEqual("2", runner.Session.ModelMetadata.CustomMetadataMap[AdaptationCheckpoint.StepMetadataKey]);

        // The rebuilt model is the adapted one (its routers, not the initial ones), so the scores match it.
        using var scope = NewDisposeScope();
        Tensor pixels = ModelTestData.Images(experts.Config, 5, seed: 80).reshape(5, -1);
        Tensor probabilities = softmax(experts.Head("mnist").Forward(model.Forward(pixels)), 1);
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(runner.Run(DenseVitOnnxExporter.InputName, pixels)["scores_mnist"], probabilities));
    }

    [TestMethod]
    public void ExpertTasksComeFromTheFileOrTheCallerAndMustAgree()
    {
        using var dir = new TempDirectory();
        string zoo = CommittedZoo.Directory;
        using var experts = ExpertPool.Load(zoo, Tasks);
        using var model = TrainedModel(experts, new WeightEnsemblingOptions { RouterDepth = 0 });
        string unnamed = dir.File("unnamed.safetensors"), named = dir.File("named.safetensors");
        model.SaveRouters(unnamed);
        model.SaveRouters(named, WeightEnsemblingRouterFile.TaskMetadata(Tasks));
        string onnx = dir.File("model.onnx");

        // Without recorded tasks the zoo's 7 tasks cannot be the 3 experts: the user names them.
        var (exit, _, error) = CliRunner.Run("export-onnx", "--wemoe-routers", unnamed, "--zoo", zoo, "--out", onnx);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "the routers have 3 expert(s) and do not record their tasks");
        Assert.IsFalse(File.Exists(onnx));

        var (namedExit, _, namedError) = CliRunner.Run(["export-onnx", "--wemoe-routers", unnamed, "--zoo", zoo, "--out", onnx, .. Tasks.SelectMany(t => new[] { "--task", t })]);
        Assert.AreEqual(0, namedExit, namedError);
        AssertMatches(onnx, model, experts, batch: 3);

        // Recorded tasks win, and a contradicting list is an error.
        var file = WeightEnsemblingRouterFile.Open(named);
        CollectionAssert.AreEqual(Tasks, file.ExpertTasks(["a", "b", "c"]).ToArray());
        var contradiction = Assert.ThrowsExactly<ArgumentException>(() => file.ExpertTasks([], ["mnist", "optical-digits", "glyph-letters"]));
        StringAssert.Contains(contradiction.Message, "weigh the experts of tasks [optical-digits, mnist, glyph-letters] in this order");
        Assert.ThrowsExactly<ArgumentException>(() => WeightEnsemblingRouterFile.Open(unnamed).ExpertTasks([], ["mnist"]));

        // A model built from the zoo's experts in another order is refused.
        using var reordered = ExpertPool.Load(zoo, ["mnist", "optical-digits", "glyph-letters"]);
        Assert.ThrowsExactly<ArgumentException>(() => file.CreateModel(reordered));
    }

    [TestMethod]
    public void BadWeightEnsemblingArgumentsAreOneLineErrors()
    {
        using var dir = new TempDirectory();
        string zoo = CommittedZoo.Directory;
        string routers;
        using (var experts = ExpertPool.Load(zoo, Tasks))
        {
            using var model = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, new WeightEnsemblingOptions { RouterDepth = 0 });
            routers = dir.File("routers.safetensors");
            model.SaveRouters(routers, WeightEnsemblingRouterFile.TaskMetadata(Tasks));
        }

        string head = Path.Combine(zoo, "heads", "mnist.safetensors"), onnx = dir.File("out.onnx");
        Directory.CreateDirectory(dir.File("empty"));
        (string[] Args, string Message)[] cases =
        [
            (["export-onnx", "--wemoe-routers", routers, "--out", onnx], "error: --wemoe-routers needs --zoo"),
            (["export-onnx", "--wemoe-routers", routers, "--zoo", zoo], "error: --out is required."),
            (["export-onnx", "--wemoe-routers", routers, "--zoo", zoo, "--out", onnx, "--model", routers], "leave out --model and --head"),
            (["export-onnx", "--model", routers, "--head", "mnist=" + head, "--zoo", zoo, "--out", onnx], "error: --zoo gives the heads when no --head is given, or the zoo of --wemoe-routers; with --head, leave it out."),
            (["export-onnx", "--model", routers, "--head", "mnist=" + head, "--task", "mnist", "--out", onnx], "error: --task applies only to a WEMoE model"),
            (["export-onnx", "--wemoe-routers", head, "--zoo", zoo, "--out", onnx], "not a WEMoE router file"),
            (["export-onnx", "--wemoe-routers", dir.File("empty"), "--zoo", zoo, "--out", onnx], "no routers.safetensors"),
            (["export-onnx", "--wemoe-routers", dir.File("missing"), "--zoo", zoo, "--out", onnx], "No router file or directory"),
            (["export-onnx", "--wemoe-routers", routers, "--zoo", zoo, "--out", onnx, "--task", "mnist"], "in this order"),
            (["export-onnx", "--wemoe-routers", routers, "--zoo", dir.File("empty"), "--out", onnx], "pool.json"),
        ];
        foreach (var (args, message) in cases)
        {
            var (exit, _, error) = CliRunner.Run(args);
            Assert.AreEqual(1, exit, string.Join(' ', args));
            StringAssert.Contains(error, message, string.Join(' ', args));
            Assert.AreEqual(1, error.TrimEnd().Split('\n').Length, error);
        }

        Assert.IsFalse(File.Exists(onnx));
    }

    [TestMethod]
    public void RoutersForAnotherModelAreRefused()
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        string routers = dir.File("routers.safetensors");
        model.SaveRouters(routers, WeightEnsemblingRouterFile.TaskMetadata(Tasks));

        using var experts = ExpertPool.Load(CommittedZoo.Directory, Tasks);
        var error = Assert.ThrowsExactly<ArgumentException>(() => WeightEnsemblingRouterFile.Open(routers).CreateModel(experts));
        StringAssert.Contains(error.Message, "the routers were trained for another model than the zoo holds (");
        StringAssert.Contains(error.Message, ", the zoo's ");
    }
}
