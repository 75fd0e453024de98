using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Onnx.Proto;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Onnx;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// A TACT result exported to ONNX computes in ONNX Runtime what its TorchSharp forward computes, on real images of the
/// committed zoo, and the graph really carries the correction: its scores are not the uncorrected merge's.
/// </summary>
[TestClass]
public sealed class TactOnnxParityTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    [DataRow("channel")]
    [DataRow("token")]
    public void EveryTasksOnnxModelScoresLikeTheCorrectedTorchForwardAndUnlikeTheUncorrectedMerge(string statistics)
    {
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var images = Unlabeled(pool, TwoTasks);
        using var model = TactAlgorithm.Instance.Run(pool, Parameters("base-method=task-arithmetic", $"statistics={statistics}"), new AlgorithmContext { Images = images });
        using var uncorrected = MergeAlgorithmRegistry.Default.Get("task-arithmetic").Run(pool, MergeParameters.Empty, new AlgorithmContext());

        Assert.HasCount(TwoTasks.Length, model.Parts, "one model per task");
        Assert.IsTrue(model.NeedsTaskAtInference);
        foreach (string task in TwoTasks)
        {
            var part = model.Part(task);
            CollectionAssert.AreEqual(new[] { task }, part.Tasks.ToArray());
            var exporter = (CorrectedVitOnnxExporter)part.Exporter;
            Assert.AreEqual(CorrectedVitOnnxExporter.SharedBackboneFileName, exporter.BackboneFileName, "a task-agnostic base: one backbone for every task");

            byte[] onnx = exporter.Export();
            using var runner = new OnnxRuntimeRunner(onnx);
            var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
            Assert.AreEqual(CorrectedVitOnnxExporter.Kind, VitOnnxModelInfo.FromMetadata(metadata).ModelKind);
            CollectionAssert.AreEqual(new[] { task }, VitOnnxModelInfo.FromMetadata(metadata).Tasks.Select(t => t.Name).ToArray());

            // Images of the task the corrections were not measured on (the next ones of its test split) and of the other task.
            using var scope = NewDisposeScope();
            string other = TwoTasks.Single(t => t != task);
            Tensor x = TactTestData.Tensor(pool, [.. TactTestData.Images(task, 2 * Examples).Skip(Examples), .. TactTestData.Images(other, 8)]);
            var outputs = runner.Run(DenseVitOnnxExporter.InputName, x.reshape(x.shape[0], -1));
            float[][] onnxScores = Rows(outputs["scores_" + task]);
            float[][] torchScores = Probabilities(model, task, x);
            float[][] mergeScores = Probabilities(uncorrected, task, x);

            Assert.IsLessThanOrEqualTo(1e-4, MLNet.MlNetTestData.MaxAbsDifference(onnxScores, torchScores), $"{task}: ONNX Runtime against TorchSharp");
            Assert.IsGreaterThan(0.05, MLNet.MlNetTestData.MaxAbsDifference(onnxScores, mergeScores), $"{task}: the exported graph applies the correction");
        }
    }

    /// <summary>The ONNX graph of one task holds a scale and a shift per channel at every site, named after the site.</summary>
    [TestMethod]
    public void TheGraphHoldsAScaleAndAShiftAtEverySite()
    {
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        using var images = Unlabeled(pool, TwoTasks);
        using var model = TactAlgorithm.Instance.Run(pool, Parameters(), new AlgorithmContext { Images = images });
        var exporter = (CorrectedVitOnnxExporter)model.Part(TwoTasks[0]).Exporter;
        var initializers = ModelProto.Parser.ParseFrom(exporter.Export()).Graph.Initializer.ToDictionary(i => i.Name, StringComparer.Ordinal);
        var sites = ActivationCorrection.Sites(pool.Config);
        Assert.HasCount(1 + 4 * pool.Config.Layers, sites);
        foreach (var (site, block) in sites)
        {
            string prefix = ActivationCorrection.TensorPrefix(site, block);
            long width = site == ActivationSite.MlpHidden ? pool.Config.MlpSize : pool.Config.Width;
            var (scale, shift) = exporter.Correction.At(site, block);
            CollectionAssert.AreEqual(new[] { width }, initializers[prefix + ".scale"].Dims.ToArray(), prefix);
            CollectionAssert.AreEqual(scale.data<float>().ToArray(), Values(initializers[prefix + ".scale"]), prefix);
            CollectionAssert.AreEqual(shift.data<float>().ToArray(), Values(initializers[prefix + ".shift"]), prefix);
        }

        Assert.AreEqual(2 * sites.Count, initializers.Keys.Count(k => k.StartsWith("tact.", StringComparison.Ordinal)));
        long dense = new DenseVitOnnxExporter(pool.Config, exporter.Weights, exporter.Heads).ParameterCount;
        Assert.AreEqual(dense + sites.Sum(s => 2L * (s.Site == ActivationSite.MlpHidden ? pool.Config.MlpSize : pool.Config.Width)), exporter.ParameterCount);
    }

    private static float[] Values(TensorProto initializer) => initializer.FloatData.Count > 0
        ? initializer.FloatData.ToArray()
        : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(initializer.RawData.Span).ToArray();
}
