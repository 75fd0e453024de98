using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// TACT as an adaptation job: what the directory holds, that loading it gives the model the run computed, that a second
/// run finds it complete, and what is refused.
/// </summary>
[TestClass]
public sealed class TactAdaptationJobTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void ASavedResultLoadsAsTheModelTheRunComputedAndASecondRunFindsItComplete()
    {
        using var dir = new TempDirectory();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var parameters = Parameters("base-method=task-arithmetic", "lambda=0.5");
        var result = AdaptationJob.Run(pool, "tact", parameters, dir.Path);

        Assert.IsFalse(result.AlreadyComplete);
        var manifest = result.Manifest;
        Assert.AreEqual("tact", manifest.Method);
        CollectionAssert.AreEqual(TwoTasks, manifest.Tasks.ToArray());
        Assert.AreEqual("task-arithmetic", manifest.Settings["base-method"]);
        Assert.AreEqual(Examples.ToString(System.Globalization.CultureInfo.InvariantCulture), manifest.Settings["examples"]);
        Assert.AreEqual(0, manifest.Result!.CompletedSteps, "TACT runs in one pass, not in steps");
        Assert.IsNull(manifest.Result.FinalLoss);
        // One backbone shared by the tasks and one small correction per task; no checkpoint or loss log of a step-wise run.
        string[] expected = ["merged.safetensors", .. TwoTasks.Select(CorrectedVitOnnxExporter.CorrectionFileName)];
        CollectionAssert.AreEquivalent(expected, manifest.Result.Files.ToArray());
        CollectionAssert.AreEquivalent(
            expected.Prepend(AdaptationManifest.FileName).ToArray(),
            Directory.GetFiles(dir.Path).Select(Path.GetFileName).ToArray());
        using (var correction = Checkpoint.Open(Path.Combine(dir.Path, CorrectedVitOnnxExporter.CorrectionFileName(TwoTasks[1]))))
        {
            Assert.AreEqual(TwoTasks[1], correction.Metadata[ActivationCorrection.TaskMetadataKey]);
            Assert.AreEqual("merged.safetensors", correction.Metadata[CorrectedVitOnnxExporter.BackboneMetadataKey]);
            Assert.AreEqual("tact", correction.Metadata[AdaptationJob.MethodMetadataKey]);
        }

        // The same run in memory (the same test images, the same seeded choice of 64) is the model the directory loads as.
        using var inMemory = TactAlgorithm.Instance.Run(pool, parameters, new AlgorithmContext());
        using var loaded = AdaptedModel.Load(dir.Path, pool);
        AssertSameLogits(inMemory, loaded, pool);

        var again = AdaptationJob.Run(pool, "tact", parameters, dir.Path);
        Assert.IsTrue(again.AlreadyComplete);
        CollectionAssert.AreEquivalent(expected, again.Manifest.Result!.Files.ToArray());

        // A pool task the run did not correct has no model in the directory: refused by name.
        using var wider = ExpertPool.Load(CommittedZoo.Directory, [TwoTasks[0], "mnist"]);
        var uncorrected = Assert.ThrowsExactly<InvalidDataException>(() => AdaptedModel.Load(dir.Path, wider));
        StringAssert.Contains(uncorrected.Message, "none for mnist");
        Assert.DoesNotContain(TwoTasks[0], uncorrected.Message.Split("none for")[1], "only the uncorrected task is named as missing");

        // One of the run's tasks alone loads: that task's correction and the shared backbone.
        using var one = ExpertPool.Load(CommittedZoo.Directory, [TwoTasks[1]]);
        using var single = AdaptedModel.Load(dir.Path, one);
        CollectionAssert.AreEqual(new[] { TwoTasks[1] }, single.Tasks.ToArray());
        AssertSameLogits(inMemory, single, one);
    }

    [TestMethod]
    public void ATaskConditionedBaseSavesOneBackbonePerTask()
    {
        using var dir = new TempDirectory();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var parameters = Parameters("base-method=tall-masks");
        var result = AdaptationJob.Run(pool, "tact", parameters, dir.Path);

        CollectionAssert.AreEquivalent(
            TwoTasks.SelectMany(t => new[] { CorrectedVitOnnxExporter.TaskBackboneFileName(t), CorrectedVitOnnxExporter.CorrectionFileName(t) }).ToArray(),
            result.Manifest.Result!.Files.ToArray());
        Assert.IsFalse(File.Exists(Path.Combine(dir.Path, CorrectedVitOnnxExporter.SharedBackboneFileName)));
        using (var correction = Checkpoint.Open(Path.Combine(dir.Path, CorrectedVitOnnxExporter.CorrectionFileName(TwoTasks[0]))))
        {
            Assert.AreEqual(CorrectedVitOnnxExporter.TaskBackboneFileName(TwoTasks[0]), correction.Metadata[CorrectedVitOnnxExporter.BackboneMetadataKey]);
        }

        using var inMemory = TactAlgorithm.Instance.Run(pool, parameters, new AlgorithmContext());
        using var loaded = AdaptedModel.Load(dir.Path, pool);
        AssertSameLogits(inMemory, loaded, pool);
        // The tasks' backbones are TALL masks' own weights of each task: not one file written twice.
        var a = ((CorrectedVitOnnxExporter)loaded.Part(TwoTasks[0]).Exporter).Weights;
        var b = ((CorrectedVitOnnxExporter)loaded.Part(TwoTasks[1]).Exporter).Weights;
        Assert.IsTrue(a.Keys.Any(k => !ModelTestData.Identical(a[k], b[k])), "each task's masked weights");
    }

    [TestMethod]
    public void SettingsTheBaseMethodDoesNotTakeAreRefusedBeforeTheDirectoryIsWritten()
    {
        using var dir = new TempDirectory();
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        string output = Path.Combine(dir.Path, "tact");

        var lambda = Assert.ThrowsExactly<ArgumentException>(() => AdaptationJob.Run(pool, "tact", Parameters("lambda=0.4"), output));
        StringAssert.Contains(lambda.Message, "'lambda' was given, but the base method simple-average has no such parameter");
        var keep = Assert.ThrowsExactly<ArgumentException>(() => AdaptationJob.Run(pool, "tact", Parameters("base-method=task-arithmetic", "keep=0.1"), output));
        StringAssert.Contains(keep.Message, "'keep' was given, but the base method task-arithmetic has no such parameter");
        var nonsense = Assert.ThrowsExactly<ArgumentException>(() => AdaptationJob.Run(pool, "tact", Parameters("base-method=nonsense"), output));
        StringAssert.Contains(nonsense.Message, "base-method");
        StringAssert.Contains(nonsense.Message, string.Join(", ", TactAlgorithm.BaseMethods));
        var steps = Assert.ThrowsExactly<ArgumentException>(() => AdaptationJob.Run(pool, "tact", Parameters("steps=10"), output));
        StringAssert.Contains(steps.Message, "Unknown parameter 'steps' for merge method 'tact'");
        Assert.IsFalse(Directory.Exists(output), "a refused run leaves no directory that a corrected command would be refused for");

        // The corrected command then runs into the same directory.
        Assert.IsFalse(AdaptationJob.Run(pool, "tact", Parameters("base-method=task-arithmetic", "lambda=0.4"), output).AlreadyComplete);
    }

    /// <summary>Logits of every task of <paramref name="pool"/> on held-out images of both tasks, identical in both models.</summary>
    private static void AssertSameLogits(MultiTaskModel expected, MultiTaskModel actual, ExpertPool pool)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor x = TactTestData.Tensor(pool, [.. Images(TwoTasks[0], 24), .. Images(TwoTasks[1], 24)]);
        foreach (string task in pool.TaskNames)
        {
            Tensor a = expected.Logits(task, x), b = actual.Logits(task, x);
            Assert.IsLessThanOrEqualTo(1e-6, a.sub(b).abs().max().item<float>(), task);
        }
    }
}
