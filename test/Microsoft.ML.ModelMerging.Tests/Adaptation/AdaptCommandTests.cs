using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Algorithms;
using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Runtime;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

/// <summary>
/// <c>mlmerge adapt</c> on the committed zoo (short runs on its two smallest tasks) and <c>mlmerge eval</c> of the result,
/// checked against the library run directly and accuracies counted here.
/// </summary>
[TestClass]
public sealed class AdaptCommandTests
{
    private static readonly string[] TwoTasks = ["optical-digits", "glyph-digits"];

    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void EvalOfAShortWemoeRunEqualsTheSameRunEvaluatedDirectly()
    {
        string zoo = CommittedZoo.Directory;
        using var directory = new TempDirectory();
        string output = directory.File("wemoe");

        var (exit, text, error) = CliRunner.Run("adapt", "--zoo", zoo, "--method", "wemoe", "--task", TwoTasks[0], "--task", TwoTasks[1],
            "--steps", "3", "--batch", "4", "--router-layers", "1", "--lr", "0.01", "--seed", "4", "--out", output);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "wemoe on 2 tasks: 3 steps");
        var manifest = AdaptationManifest.Read(output);
        CollectionAssert.AreEqual(TwoTasks, manifest.Tasks.ToArray());
        Assert.AreEqual("1", manifest.Settings["router-depth"]);
        Assert.AreEqual("0.01", manifest.Settings["learning-rate"]);
        Assert.AreEqual("0.3", manifest.Settings["lambda"], "defaults are recorded too");
        CollectionAssert.AreEquivalent(new[] { "routers.safetensors", "merged.safetensors", "checkpoint.safetensors", "losses.csv" }, manifest.Result!.Files.ToArray());

        // Evaluated on one task: the adapted model is still rebuilt with both experts, in the run's order.
        (exit, text, error) = CliRunner.Run("eval", "--model", output, "--zoo", zoo, "--task", TwoTasks[0]);
        Assert.AreEqual(0, exit, error);

        using var experts = ExpertPool.Load(zoo, TwoTasks);
        var splits = TwoTasks.Select(t => experts.LoadData(t)).ToList();
        var tasks = TwoTasks.Select((t, i) => new AdaptationTask(t, splits[i].Test.ToTensor(), experts.Head(t))).ToList();
        using var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, new WeightEnsemblingOptions { RouterDepth = 1, Seed = 4 });
        TestTimeAdaptation.Run(moe, tasks, new TestTimeAdaptationOptions { LearningRate = 0.01, Steps = 3, BatchSizePerTask = 4, Seed = 4 });

        using (var oneTask = ExpertPool.Load(zoo, [TwoTasks[0]]))
        using (var loaded = AdaptedModel.Load(output, oneTask))
        {
            foreach (var (name, parameter) in moe.RouterParameters)
            {
                Assert.IsTrue(ModelTestData.Identical(parameter.detach(), ((WeightEnsemblingOnnxExporter)loaded.Parts[0].Exporter).Model.RouterParameters[name].detach()), name);
            }
        }

        string expected = (100.0 * CountCorrect(x => tasks[0].Head.Forward(moe.Forward(x)), tasks[0].Images, splits[0].Test.Labels.ToArray())
            / splits[0].Test.Count).ToString("F1", CultureInfo.InvariantCulture);
        StringAssert.Matches(text, new Regex($@"{TwoTasks[0]}\s+{Regex.Escape(expected)}\s"));
        foreach (var task in tasks)
        {
            task.Images.Dispose();
        }
    }

    /// <summary>
    /// Output i of a router weighs expert i, so the routers written by <c>mlmerge adapt</c> name their experts' tasks in
    /// order; another order is refused instead of silently swapping experts.
    /// </summary>
    [TestMethod]
    public void TheRoutersOfARunRecordTheirExpertsOrderAndRefuseAnother()
    {
        string zoo = CommittedZoo.Directory;
        using var directory = new TempDirectory();
        string output = directory.File("wemoe");
        // Not the zoo's order, so that falling back to the zoo's order would be wrong.
        string[] runOrder = [TwoTasks[1], TwoTasks[0]];

        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", zoo, "--method", "wemoe", "--task", runOrder[0], "--task", runOrder[1],
            "--steps", "1", "--batch", "2", "--router-layers", "0", "--out", output);
        Assert.AreEqual(0, exit, error);
        var routers = WeightEnsemblingRouterFile.Open(output);
        Assert.AreEqual(Path.Combine(output, WeightEnsemblingOnnxExporter.RoutersFileName), routers.Path);
        CollectionAssert.AreEqual(runOrder, routers.Tasks!.ToArray());

        using (var zooOrder = ExpertPool.Load(zoo, TwoTasks))
        {
            var wrongOrder = Assert.ThrowsExactly<ArgumentException>(() => routers.CreateModel(zooOrder));
            StringAssert.Contains(wrongOrder.Message, $"the routers weigh the experts of tasks [{runOrder[0]}, {runOrder[1]}] in this order");
        }

        (exit, _, error) = CliRunner.Run("export-onnx", "--wemoe-routers", output, "--zoo", zoo, "--task", TwoTasks[0], "--task", TwoTasks[1],
            "--out", directory.File("wemoe.onnx"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "in this order");

        // Routers whose recorded order contradicts the run's manifest are refused by eval.
        using (var experts = ExpertPool.Load(zoo, runOrder))
        using (var loaded = AdaptedModel.Load(output, experts))
        {
            ((WeightEnsemblingOnnxExporter)loaded.Parts[0].Exporter).Model.SaveRouters(routers.Path, WeightEnsemblingRouterFile.TaskMetadata(TwoTasks));
        }

        (exit, _, error) = CliRunner.Run("eval", "--model", output, "--zoo", zoo);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, $"weighs the experts of tasks [{TwoTasks[0]}, {TwoTasks[1]}] in this order; the run's manifest lists [{runOrder[0]}, {runOrder[1]}]");
    }

    [TestMethod]
    public void AnInterruptedRunContinuesFromItsCheckpointToTheUninterruptedResult()
    {
        string zoo = CommittedZoo.Directory;
        using var directory = new TempDirectory();
        string interrupted = directory.File("interrupted"), uninterrupted = directory.File("uninterrupted");
        string[] Arguments(string output, string learningRate = "0.001") =>
            ["adapt", "--zoo", zoo, "--method", "adamerging-layer", "--task", "optical-digits", "--steps", "4", "--batch", "4", "--lr", learningRate,
             "--checkpoint-every", "2", "--out", output];

        // Stopped after step 3; the checkpoint of step 2 is the last complete one.
        using (var experts = ExpertPool.Load(zoo, ["optical-digits"]))
        using (var cancellation = new CancellationTokenSource())
        {
            var parameters = MergeParameters.Parse("steps=4", "batch=4", "learning-rate=0.001");
            var progress = new SynchronousProgress<AdaptationJobProgress>(p =>
            {
                if (p.Stage == "adapting" && p.Done == 3)
                {
                    cancellation.Cancel();
                }
            });
            Assert.ThrowsExactly<OperationCanceledException>(() => AdaptationJob.Run(experts, "adamerging-layer", parameters, interrupted,
                new AdaptationJobCheckpoints { Every = 2, Interval = null }, progress: progress, cancellationToken: cancellation.Token));
        }

        Assert.AreEqual(2, AdaptationCheckpoint.ReadCompletedSteps(Path.Combine(interrupted, AdaptationJob.CheckpointFileName)));
        var (exit, text, error) = CliRunner.Run("eval", "--model", interrupted, "--zoo", zoo, "--task", "optical-digits");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "has not finished (checkpoint at step 2)");

        (exit, text, error) = CliRunner.Run(Arguments(interrupted));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "4 steps (resumed at step 2)");
        (exit, _, error) = CliRunner.Run(Arguments(uninterrupted));
        Assert.AreEqual(0, exit, error);

        using (var scope = NewDisposeScope())
        using (var resumed = ModelCheckpoints.LoadBackbone(Path.Combine(interrupted, DenseVitOnnxExporter.WeightsFileName)))
        using (var straight = ModelCheckpoints.LoadBackbone(Path.Combine(uninterrupted, DenseVitOnnxExporter.WeightsFileName)))
        {
            foreach (var (name, tensor) in straight.Weights)
            {
                Assert.IsTrue(ModelTestData.Identical(tensor, resumed.Weights[name]), name);
            }
        }

        static string[] LossColumns(string directory) => [.. File.ReadAllLines(Path.Combine(directory, AdaptationJob.LossesFileName))
            .Select(line => string.Join(",", line.Split(',').Where((_, i) => i != 1)))];
        string[] losses = LossColumns(interrupted);
        Assert.HasCount(5, losses);
        CollectionAssert.AreEqual(LossColumns(uninterrupted), losses);

        (exit, text, error) = CliRunner.Run(Arguments(interrupted));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "already complete (4 steps");

        (exit, _, error) = CliRunner.Run(Arguments(interrupted, learningRate: "0.01"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "holds another run: learning-rate 0.001 recorded, 0.01 asked. Choose another output directory.");
    }

    /// <summary>Fisher and RegMean write the backbone the library computes from the same training examples; eval reads the directory.</summary>
    [TestMethod]
    [DataRow("fisher")]
    [DataRow("regmean")]
    public void FisherAndRegMeanWriteTheBackboneTheLibraryComputes(string method)
    {
        string zoo = CommittedZoo.Directory;
        using var directory = new TempDirectory();
        string output = directory.File(method);

        var (exit, text, error) = CliRunner.Run("adapt", "--zoo", zoo, "--method", method, "--task", TwoTasks[0], "--task", TwoTasks[1],
            "--examples", "6", "--seed", "2", "--out", output);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, $"{method} on 2 tasks: 6 labeled training examples per task (stratified, seed 2)");

        using var scope = NewDisposeScope();
        using var experts = ExpertPool.Load(zoo, TwoTasks);
        var examples = TwoTasks.Select(t =>
        {
            var train = ExpertExamples.Sample(experts.LoadData(t).Train, 6, seed: 2);
            Assert.AreEqual(6, train.Count);
            return new ExpertExamples(t, experts.Expert(t), train.ToTensor()) { Head = experts.Head(t), Labels = train.LabelsToTensor() };
        }).ToList();
        var expected = method == "fisher" ? FisherMerge.Merge(experts.Config, examples) : RegMeanMerge.Merge(experts.Config, examples);
        using var written = ModelCheckpoints.LoadBackbone(Path.Combine(output, DenseVitOnnxExporter.WeightsFileName));
        Assert.AreEqual(method, written.Metadata[AdaptationJob.MethodMetadataKey]);
        foreach (var (name, tensor) in expected)
        {
            Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(tensor, written.Weights[name]), name);
        }

        var (_, fromDirectory, _) = CliRunner.Run("eval", "--model", output, "--zoo", zoo, "--task", TwoTasks[0], "--split", "val");
        var (_, fromFile, _) = CliRunner.Run("eval", "--model", Path.Combine(output, DenseVitOnnxExporter.WeightsFileName), "--zoo", zoo, "--task", TwoTasks[0], "--split", "val");
        StringAssert.Contains(fromDirectory, TwoTasks[0]);
        Assert.AreEqual(fromFile, fromDirectory);
    }

    /// <summary>A run's identity is the values of its parameters, not their spelling: the same run given another way resumes.</summary>
    [TestMethod]
    public void TheSameSettingsSpelledOtherwiseAreTheSameRun()
    {
        using var directory = new TempDirectory();
        string output = directory.File("ada");
        string[] common = ["adapt", "--zoo", CommittedZoo.Directory, "--method", "adamerging-task", "--task", TwoTasks[0], "--steps", "2", "--batch", "4", "--out", output];
        var (exit, _, error) = CliRunner.Run([.. common, "--lr", "0.0001"]);
        Assert.AreEqual(0, exit, error);
        (exit, var text, error) = CliRunner.Run([.. common, "--param", "learning-rate=1e-4", "--param", "lambda=0.30"]);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "already complete");
        Assert.AreEqual("0.0001", AdaptationManifest.Read(output).Settings["learning-rate"]);
    }

    [TestMethod]
    public void BadMethodsAndSettingsAreOneLineErrors()
    {
        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", CommittedZoo.Directory, "--method", "ties", "--out", "unused");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "ties needs no data: merge with `mlmerge merge --method ties`");

        (exit, _, error) = CliRunner.Run("adapt", "--zoo", CommittedZoo.Directory, "--method", "magic", "--out", "unused");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "Unknown merge method 'magic' (known: simple-average");

        (exit, _, error) = CliRunner.Run("adapt", "--zoo", CommittedZoo.Directory, "--method", "e-wemoe", "--router-layers", "3", "--out", "unused");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "Parameter 'router-depth' of merge method 'e-wemoe' must be an integer in [0, 2]; got '3'");

        (exit, _, error) = CliRunner.Run("adapt", "--zoo", CommittedZoo.Directory, "--method", "fisher", "--router-layers", "1", "--out", "unused");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "--router-layers does not apply to fisher (its parameters: examples, epsilon, seed)");

        (exit, _, error) = CliRunner.Run("adapt", "--zoo", CommittedZoo.Directory, "--method", "wemoe", "--param", "task-routing=1", "--out", "unused");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "wemoe: task-routing 1 needs routing=softmax");
        Assert.IsFalse(Directory.Exists("unused"));
    }

    private static int CountCorrect(Func<Tensor, Tensor> logits, Tensor images, int[] labels)
    {
        int correct = 0;
        using var noGrad = no_grad();
        for (int start = 0; start < labels.Length; start += 100)
        {
            using var scope = NewDisposeScope();
            int size = Math.Min(100, labels.Length - start);
            float[] scores = logits(images.narrow(0, start, size)).data<float>().ToArray();
            int classes = scores.Length / size;
            for (int i = 0; i < size; i++)
            {
                int best = 0;
                for (int c = 1; c < classes; c++)
                {
                    if (scores[(i * classes) + c] > scores[(i * classes) + best])
                    {
                        best = c;
                    }
                }

                if (best == labels[start + i])
                {
                    correct++;
                }
            }
        }

        return correct;
    }
}
