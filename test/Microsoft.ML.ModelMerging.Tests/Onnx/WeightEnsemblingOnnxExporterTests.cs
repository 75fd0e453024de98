using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Onnx.Proto;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>
/// The WEMoE ONNX graph against <see cref="WeightEnsemblingMoE.Forward"/> + heads in TorchSharp, on fresh images, with
/// routers moved away from their initialisation (as after test-time adaptation) so routing differs per sample and from λ.
/// </summary>
[TestClass]
public sealed class WeightEnsemblingOnnxExporterTests
{
    private const double Fp32Tolerance = 1e-4;

    /// <summary>
    /// Float16 task vectors against the float32 model: max |Δ| ≤ this × max(1, max |output|) per output (features and
    /// logits). Each τ entry is rounded by at most 2⁻¹¹ ≈ 4.9e-4 relative, so the merged MLP weights move by at most
    /// Σ_i |r_i|·|τ_i|·2⁻¹¹, a small fraction of the weights; measured on this model (τ ~ N(0, 0.1²), routing up to ~1,
    /// heads scaled ×4): 5.4e-4. The bound is the one the dense exporter uses for float16 weights.
    /// </summary>
    private const double Fp16TaskVectorRelativeTolerance = 5e-3;

    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    /// <summary>Adds N(0, scale²) noise to every router tensor (seeded), as training would move them.</summary>
    private static void PerturbRouters(WeightEnsemblingMoE model, double scale, long seed)
    {
        var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var (_, parameter) in model.RouterParameters.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            parameter.PlusInPlace(randn(parameter.shape, generator: generator).Times(scale));
        }
    }

    private static List<OnnxTaskHead> Heads(AdaptationTestData data) => [.. data.Tasks.Select(t => new OnnxTaskHead(t.Name, t.Head))];

    private static Tensor Pixels(VisionTransformerConfig config, int batch, long seed) =>
        ModelTestData.Images(config, batch, seed).reshape(batch, -1);

    /// <summary>Largest difference of features and of every task's logits between ONNX Runtime and TorchSharp.</summary>
    private static double MaxError(OnnxRuntimeRunner runner, WeightEnsemblingMoE model, AdaptationTestData data, Tensor pixels)
    {
        var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
        Tensor features = model.Forward(pixels);
        double error = ModelTestData.MaxAbsDiff(outputs[DenseVitOnnxExporter.FeaturesName], features);
        foreach (var task in data.Tasks)
        {
            error = Math.Max(error, ModelTestData.MaxAbsDiff(outputs[OnnxTaskHead.ScoresOutputName(task.Name)], task.Head.Forward(features)));
        }

        return error;
    }

    /// <summary>Largest max |Δ| / max(1, max |reference|) over features and every task's logits.</summary>
    private static double MaxRelativeError(OnnxRuntimeRunner runner, WeightEnsemblingMoE model, AdaptationTestData data, Tensor pixels)
    {
        var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
        Tensor features = model.Forward(pixels);
        static double Relative(Tensor actual, Tensor expected) =>
            ModelTestData.MaxAbsDiff(actual, expected) / Math.Max(1, expected.abs().max().item<float>());
        double error = Relative(outputs[DenseVitOnnxExporter.FeaturesName], features);
        foreach (var task in data.Tasks)
        {
            error = Math.Max(error, Relative(outputs[OnnxTaskHead.ScoresOutputName(task.Name)], task.Head.Forward(features)));
        }

        return error;
    }

    [TestMethod]
    [DataRow(0, false, 0.0, false, DisplayName = "depth 0")]
    [DataRow(1, false, 0.0, false, DisplayName = "depth 1")]
    [DataRow(2, false, 0.0, false, DisplayName = "depth 2")]
    [DataRow(2, true, 0.1, false, DisplayName = "E-WEMoE: pruned task vectors, shared depth-2 router")]
    [DataRow(1, true, 0.0, false, DisplayName = "shared depth-1 router")]
    [DataRow(2, false, 0.0, true, DisplayName = "depth 2, batch-reduced routing")]
    [DataRow(1, false, 0.3, true, DisplayName = "depth 1, pruned, batch-reduced routing")]
    [DataRow(2, false, 0.0, false, true, DisplayName = "depth 2, softmax routing")]
    [DataRow(1, true, 0.0, true, true, DisplayName = "shared depth-1 router, softmax, batch-reduced routing")]
    public void OnnxRuntimeMatchesTheTorchModelForEveryBatchSize(int depth, bool shareRouter, double keep, bool batchReduce, bool softmax = false)
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        var options = new WeightEnsemblingOptions
        {
            RouterDepth = depth, ShareRouter = shareRouter, TaskVectorKeep = keep > 0 ? keep : null, BatchReduce = batchReduce, Seed = 5,
            SoftmaxRouting = softmax,
        };
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options);
        PerturbRouters(model, depth == 0 ? 0.3 : 0.5, seed: 7);
        var exporter = new WeightEnsemblingOnnxExporter(model, Heads(data), new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits });
        using var runner = new OnnxRuntimeRunner(exporter.Export());

        foreach (int batch in new[] { 1, 4, 9 })
        {
            Tensor pixels = Pixels(data.Config, batch, seed: 100 + batch);
            double error = MaxError(runner, model, data, pixels);
            Assert.IsLessThanOrEqualTo(Fp32Tolerance, error, $"batch {batch}");
        }

        // The routing is far from λ (the routers are not at their initialisation) and, when per sample, differs between samples.
        Tensor images = Pixels(data.Config, 9, seed: 200);
        var (_, routing) = model.ForwardWithRouting(images);                                                       // [L,B,E]
        Assert.IsGreaterThan(0.1, (routing.MinusScalar(softmax ? 1.0 / 3 : WeightEnsemblingOptions.DefaultLambda)).abs().max().item<float>());
        double spread = routing.std([1]).max().item<float>();
        if (depth == 0 || batchReduce)
        {
            Assert.AreEqual(0.0, spread, 1e-7);
        }
        else
        {
            Assert.IsGreaterThan(0.02, spread);
        }

        // And the exported model computes that routing: its features are not those of task arithmetic.
        Tensor taskArithmetic = VisionTransformer.Forward(data.Config, data.TaskArithmetic(), images);
        Assert.IsGreaterThan(1e-2, ModelTestData.MaxAbsDiff(runner.Run(DenseVitOnnxExporter.InputName, images)[DenseVitOnnxExporter.FeaturesName], taskArithmetic));
    }

    [TestMethod]
    public void RgbGeluModelWithProjectionMatchesWithAndWithoutGraphOptimizations()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyRgb();
        var pretrained = ModelTestData.RandomWeights(config, seed: 31);
        var generator = new Generator(32);
        var experts = Enumerable.Range(0, 4).Select(_ => (IReadOnlyDictionary<string, Tensor>)pretrained.ToDictionary(
            kv => kv.Key, kv => kv.Value.Plus((randn(kv.Value.shape, generator: generator).Times(0.1))), StringComparer.Ordinal)).ToList();
        using var model = WeightEnsemblingMoE.Create(config, pretrained, experts, new WeightEnsemblingOptions { RouterDepth = 2 });
        PerturbRouters(model, 0.5, seed: 33);
        using var head = ClassificationHead.Clip(["x", "y", "z"], randn(3, config.FeatureDim, generator: generator));
        byte[] bytes = new WeightEnsemblingOnnxExporter(model, [new OnnxTaskHead("rgb", head)], new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits }).Export();
        Tensor pixels = Pixels(config, 5, seed: 34);
        Tensor features = model.Forward(pixels);

        foreach (var level in new[] { Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_DISABLE_ALL, Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            using var runner = new OnnxRuntimeRunner(bytes, level);
            var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
            Assert.IsLessThanOrEqualTo(Fp32Tolerance, ModelTestData.MaxAbsDiff(outputs[DenseVitOnnxExporter.FeaturesName], features), level.ToString());
            Assert.IsLessThanOrEqualTo(Fp32Tolerance, ModelTestData.MaxAbsDiff(outputs["scores_rgb"], head.Forward(features)), level.ToString());
        }
    }

    [TestMethod]
    public void BatchReducedRoutingMakesASampleDependOnItsBatchInBothRuntimes()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, new WeightEnsemblingOptions { BatchReduce = true });
        PerturbRouters(model, 0.5, seed: 8);
        using var runner = new OnnxRuntimeRunner(new WeightEnsemblingOnnxExporter(model, Heads(data)).Export());
        Tensor batch = Pixels(data.Config, 6, seed: 300);
        Tensor alone = batch.narrow(0, 0, 1);

        Tensor inBatch = runner.Run(DenseVitOnnxExporter.InputName, batch)[DenseVitOnnxExporter.FeaturesName].narrow(0, 0, 1);
        Tensor single = runner.Run(DenseVitOnnxExporter.InputName, alone)[DenseVitOnnxExporter.FeaturesName];

        Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(inBatch, single));
        Assert.IsLessThanOrEqualTo(Fp32Tolerance, ModelTestData.MaxAbsDiff(inBatch, model.Forward(batch).narrow(0, 0, 1)));
        Assert.IsLessThanOrEqualTo(Fp32Tolerance, ModelTestData.MaxAbsDiff(single, model.Forward(alone)));
    }

    [TestMethod]
    public void Float16TaskVectorsEqualTorchOnRoundedTaskVectorsAndStayCloseToFloat32()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        PerturbRouters(model, 0.5, seed: 9);
        var options = new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits };
        var full = new WeightEnsemblingOnnxExporter(model, Heads(data), options).BuildGraph();
        var half = new WeightEnsemblingOnnxExporter(model, Heads(data), options, OnnxWeightPrecision.Float16).BuildGraph();

        // τ is E × every MLP parameter per block, 4 bytes per entry in float32 and 2 in float16.
        long mlpParameters = (2L * data.Config.Width * data.Config.MlpSize) + data.Config.Width + data.Config.MlpSize;
        long taskVectorBytes = 4L * data.Config.Layers * model.ExpertCount * mlpParameters;
        Assert.AreEqual(taskVectorBytes / 2, full.InitializerBytes - half.InitializerBytes);

        // The same model with its MLP task vectors rounded to float16 (experts θ0 + fp16(θ_i − θ0) on the MLPs only, same
        // routers): the float16 graph computes exactly that model.
        var mlpNames = Enumerable.Range(0, data.Config.Layers).SelectMany(b =>
        {
            var names = VisionTransformerNames.Layer(b);
            return new[] { names.Fc1, names.Fc2 }.SelectMany(l => new[] { VisionTransformerNames.Weight(l), VisionTransformerNames.Bias(l) });
        }).ToHashSet(StringComparer.Ordinal);
        var roundedExperts = data.Experts.Select(expert => (IReadOnlyDictionary<string, Tensor>)expert.ToDictionary(kv => kv.Key, kv => mlpNames.Contains(kv.Key)
            ? data.Pretrained[kv.Key].Plus((kv.Value - data.Pretrained[kv.Key]).to(ScalarType.Float16).to(ScalarType.Float32))
            : kv.Value, StringComparer.Ordinal)).ToList();
        using var rounded = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, roundedExperts);
        PerturbRouters(rounded, 0.5, seed: 9);

        using var runner = new OnnxRuntimeRunner(half.ToByteArray());
        double deviation = 0;
        foreach (int batch in new[] { 1, 7 })
        {
            Tensor pixels = Pixels(data.Config, batch, seed: 400 + batch);
            Assert.IsLessThanOrEqualTo(Fp32Tolerance, MaxError(runner, rounded, data, pixels), $"batch {batch}");
            deviation = Math.Max(deviation, MaxRelativeError(runner, model, data, pixels));
        }

        Console.WriteLine($"float16 task vectors: max deviation from the float32 model {deviation:G3} relative to the output magnitude");
        Assert.IsLessThanOrEqualTo(Fp16TaskVectorRelativeTolerance, deviation);
        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("float16", metadata[WeightEnsemblingOnnxExporter.TaskVectorPrecisionKey]);
        Assert.AreEqual(OnnxWeightPrecision.Float32, VitOnnxModelInfo.FromMetadata(metadata).WeightPrecision);
        Assert.IsTrue(half.HasValue("vision_model.encoder.layers.0.mlp.task_vectors.float32"), "the float16 task vectors are cast in the graph");
    }

    [TestMethod]
    public void TheSameModelExportsToTheSameBytes()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, WeightEnsemblingOptions.Efficient());
        PerturbRouters(model, 0.5, seed: 10);
        byte[] first = new WeightEnsemblingOnnxExporter(model, Heads(data)).Export();
        var exporter = new WeightEnsemblingOnnxExporter(model, Heads(data));

        CollectionAssert.AreEqual(first, exporter.Export());
        CollectionAssert.AreEqual(first, exporter.Export());
    }

    [TestMethod]
    public void MetadataAndInitializersDescribeTheModel()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 3);
        var options = WeightEnsemblingOptions.Efficient() with { RouterDepth = 1 };
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, options);
        byte[] bytes = new WeightEnsemblingOnnxExporter(model, Heads(data), new VitOnnxExportOptions
        {
            Metadata = new Dictionary<string, string> { ["mlmerge.merge_method"] = "e-wemoe" },
        }).Export();

        using var runner = new OnnxRuntimeRunner(bytes);
        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        var info = VitOnnxModelInfo.FromMetadata(metadata);
        Assert.AreEqual("wemoe", info.ModelKind);
        CollectionAssert.AreEqual(new[] { "task0", "task1", "task2" }, info.Tasks.Select(t => t.Name).ToArray());
        Assert.AreEqual(options, WeightEnsemblingOptions.FromJson(metadata[WeightEnsemblingOptions.MetadataKey]));
        Assert.AreEqual("3", metadata[WeightEnsemblingMoE.ExpertCountMetadataKey]);
        Assert.AreEqual("float32", metadata[WeightEnsemblingOnnxExporter.TaskVectorPrecisionKey]);
        Assert.AreEqual(WeightEnsemblingOnnxExporter.MlpLayout, metadata[WeightEnsemblingOnnxExporter.MlpLayoutKey]);
        Assert.AreEqual("e-wemoe", metadata["mlmerge.merge_method"]);

        var initializers = ModelProto.Parser.ParseFrom(bytes).Graph.Initializer.ToDictionary(t => t.Name, t => t.Dims.ToArray(), StringComparer.Ordinal);
        // The shared router is stored once; the MLPs only as θ0 and τ in the flat layout (no dense fc1/fc2 tensors).
        CollectionAssert.AreEquivalent(new[] { "router.shared.fc.weight", "router.shared.fc.bias" },
            initializers.Keys.Where(k => k.StartsWith("router.", StringComparison.Ordinal)).ToArray());
        Assert.IsFalse(initializers.Keys.Any(k => k.Contains(".mlp.fc", StringComparison.Ordinal)));
        long p = (2L * data.Config.Width * data.Config.MlpSize) + data.Config.Width + data.Config.MlpSize;
        for (int block = 0; block < data.Config.Layers; block++)
        {
            CollectionAssert.AreEqual(new[] { 3, p }, initializers[$"vision_model.encoder.layers.{block}.mlp.task_vectors"]);
            CollectionAssert.AreEqual(new[] { p }, initializers[$"vision_model.encoder.layers.{block}.mlp.pretrained"]);
        }

        // The flat layout is the one documented: fc1.weightᵀ first.
        var (pretrained, taskVectors) = WeightEnsemblingOnnxExporter.FlatMlp(model, 1);
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(1).Fc1);
        long fc1Size = (long)data.Config.Width * data.Config.MlpSize;
        Assert.IsTrue(ModelTestData.Identical(model.PretrainedMlpTensor(fc1).t().reshape(-1), pretrained.narrow(0, 0, fc1Size)));
        Assert.IsTrue(ModelTestData.Identical(model.MlpTaskVectors(fc1)[2].t().reshape(-1), taskVectors[2].narrow(0, 0, fc1Size)));
    }

    [TestMethod]
    public void MetadataKeysOfTheExporterAreRefused()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create(experts: 2);
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        foreach (string key in new[] { WeightEnsemblingOptions.MetadataKey, WeightEnsemblingOnnxExporter.TaskVectorPrecisionKey, VitOnnxModelInfo.ModelKindKey })
        {
            var error = Assert.ThrowsExactly<ArgumentException>(() => new WeightEnsemblingOnnxExporter(model, Heads(data),
                new VitOnnxExportOptions { Metadata = new Dictionary<string, string> { [key] = "x" } }));
            StringAssert.Contains(error.Message, key);
        }
    }
}
