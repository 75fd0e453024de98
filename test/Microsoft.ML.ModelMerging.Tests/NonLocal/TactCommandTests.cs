using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Onnx;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Zoo;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// <c>mlmerge adapt --method tact</c>, then <c>eval</c> and <c>export-onnx</c> of its directory, as a user runs them, checked
/// against the library; and the options TACT refuses.
/// </summary>
[TestClass]
public sealed class TactCommandTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    private static string[] Adapt(string output, params string[] more) =>
        ["adapt", "--zoo", CommittedZoo.Directory, "--method", "tact", "--task", TwoTasks[0], "--task", TwoTasks[1],
            "--examples", Examples.ToString(CultureInfo.InvariantCulture), .. more, "--out", output];

    [TestMethod]
    public void AdaptEvalAndExportOnnxOfATactResult()
    {
        using var dir = new TempDirectory();
        string output = dir.File("tact");
        var (exit, text, error) = CliRunner.Run(Adapt(output, "--base-method", "task-arithmetic", "--lambda", "0.5", "--epsilon", "1e-6"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "tact on 2 tasks:");
        StringAssert.Contains(text, "result: merged.safetensors, corrections-optical-digits.safetensors, corrections-glyph-letters.safetensors");
        var manifest = AdaptationManifest.Read(output);
        Assert.AreEqual("0.5", manifest.Settings["lambda"]);
        Assert.AreEqual("1E-06", manifest.Settings["epsilon"].ToUpperInvariant());
        using (var correction = ActivationCorrection.Load(Path.Combine(output, CorrectedVitOnnxExporter.CorrectionFileName(TwoTasks[0])), PoolManifest.Read(CommittedZoo.Directory).ModelConfig))
        {
            Assert.AreEqual(1e-6, correction.Epsilon);
        }

        (exit, text, error) = CliRunner.Run(Adapt(output, "--base-method", "task-arithmetic", "--lambda", "0.5", "--epsilon", "1e-6"));
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "already complete");

        // eval: without --task, the tasks the run corrected (the zoo has more); each task's accuracy is that of its own model.
        (exit, text, error) = CliRunner.Run("eval", "--model", output, "--zoo", CommittedZoo.Directory);
        Assert.AreEqual(0, exit, error);
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var loaded = AdaptedModel.Load(output, pool);
        var accuracies = TaskAccuracy.Evaluate(pool, (task, x) => loaded.Features(task, x), EvaluationSplit.Test);
        foreach (string task in TwoTasks)
        {
            string expected = (100 * accuracies.PerTask[task]).ToString("F1", CultureInfo.InvariantCulture);
            StringAssert.Matches(text, new Regex($@"(?m)^{task}\s+{Regex.Escape(expected)}\s"), task);
        }

        Assert.DoesNotContain("mnist", text, "only the corrected tasks are evaluated");
        // The correction helps this far merge: each task's model beats the uncorrected merge on its task.
        using var merged = MergeAlgorithmRegistry.Default.Get("task-arithmetic").Run(pool, MergeParameters.Parse("lambda=0.5"), new AlgorithmContext());
        var uncorrected = TaskAccuracy.Evaluate(pool, (task, x) => merged.Features(task, x), EvaluationSplit.Test);
        Assert.IsGreaterThan(uncorrected.Average, accuracies.Average, "TACT on task arithmetic, against task arithmetic alone");

        // export-onnx: one model per task beside the name given, each loadable by ONNX Runtime and scoring like the loaded model.
        string onnx = dir.File("onnx/m.onnx");
        (exit, text, error) = CliRunner.Run("export-onnx", "--model", output, "--zoo", CommittedZoo.Directory, "--out", onnx);
        Assert.AreEqual(0, exit, error);
        CollectionAssert.AreEquivalent(TwoTasks.Select(t => dir.File($"onnx/m.{t}.onnx")).ToArray(), Directory.GetFiles(dir.File("onnx")));
        foreach (string task in TwoTasks)
        {
            StringAssert.Contains(text, $"exported {task} (TACT-corrected)");
            using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(dir.File($"onnx/m.{task}.onnx")));
            var info = VitOnnxModelInfo.FromMetadata(runner.Session.ModelMetadata.CustomMetadataMap);
            Assert.AreEqual("tact", info.ModelKind);
            CollectionAssert.AreEqual(new[] { task }, info.Tasks.Select(t => t.Name).ToArray());
            using var scope = NewDisposeScope();
            Tensor x = TactTestData.Tensor(pool, Images(task, 16));
            float[][] scores = Rows(runner.Run(DenseVitOnnxExporter.InputName, x.reshape(16, -1))["scores_" + task]);
            Assert.IsLessThanOrEqualTo(1e-4, MLNet.MlNetTestData.MaxAbsDifference(scores, Probabilities(loaded, task, x)), task);
        }

        // A pool task the run did not correct, asked for by name: refused, naming it.
        (exit, _, error) = CliRunner.Run("eval", "--model", output, "--zoo", CommittedZoo.Directory, "--task", TwoTasks[0], "--task", "mnist");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "none for mnist");
    }

    [TestMethod]
    public void OptionsTactDoesNotTakeAreRefusedWithTheReason()
    {
        using var dir = new TempDirectory();
        string output = dir.File("tact");

        var (exit, _, error) = CliRunner.Run(Adapt(output, "--steps", "10"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "--steps does not apply to tact (its parameters: base-method, examples, epsilon, statistics, seed, lambda, keep)");

        (exit, _, error) = CliRunner.Run(Adapt(output, "--base-method", "nonsense"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "nonsense");
        StringAssert.Contains(error, string.Join(", ", TactAlgorithm.BaseMethods));

        (exit, _, error) = CliRunner.Run(Adapt(output, "--lambda", "0.3"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "'lambda' was given, but the base method simple-average has no such parameter");

        (exit, _, error) = CliRunner.Run(Adapt(output, "--base-method", "ties", "--epsilon", "-1"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "epsilon");

        Assert.IsFalse(Directory.Exists(output), "nothing is written for a refused command");
    }
}
