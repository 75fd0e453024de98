using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Onnx.Proto;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

[TestClass]
public sealed class DenseVitOnnxExporterTests
{
    /// <summary>fp32 ONNX Runtime against the TorchSharp functional forward.</summary>
    private const double Float32Tolerance = 1e-4;

    private static readonly int[] BatchSizes = [1, 3, 8];

    /// <summary>A backbone with random weights and its heads; disposes all of them.</summary>
    private sealed class Fixture : IDisposable
    {
        public Fixture(VisionTransformerConfig config, long seed, params (string Task, ClassificationHeadKind Kind, int Classes)[] tasks)
        {
            Config = config;
            Weights = ModelTestData.RandomWeights(config, seed);
            foreach (Tensor t in Weights.Values)
            {
                t.DetachFromDisposeScope();
            }

            var generator = new Generator((ulong)seed + 1);
            Heads = tasks.Select((t, i) =>
            {
                var names = Enumerable.Range(0, t.Classes).Select(c => $"{t.Task}-class{c}").ToArray();
                ClassificationHead head;
                if (t.Kind == ClassificationHeadKind.Linear)
                {
                    head = ClassificationHead.CreateLinear(names, config.FeatureDim, seed + 10 + i);
                }
                else
                {
                    using Tensor embeddings = randn([t.Classes, config.FeatureDim], generator: generator);
                    head = ClassificationHead.Clip(names, embeddings);
                }

                return new OnnxTaskHead(t.Task, head);
            }).ToArray();
        }

        public VisionTransformerConfig Config { get; }

        public Dictionary<string, Tensor> Weights { get; }

        public OnnxTaskHead[] Heads { get; }

        public DenseVitOnnxExporter Exporter(VitOnnxExportOptions? options = null) => new(Config, Weights, Heads, options);

        /// <summary>TorchSharp reference: features and per-task logits for flattened pixels [B, C·H·W].</summary>
        public (Tensor Features, Dictionary<string, Tensor> Logits) Reference(Tensor pixels, IReadOnlyDictionary<string, Tensor>? weights = null)
        {
            using var noGrad = no_grad();
            Tensor features = VisionTransformer.Forward(Config, weights ?? Weights, pixels);
            return (features, Heads.ToDictionary(h => h.Task, h => h.Head.Forward(features)));
        }

        public void Dispose()
        {
            foreach (Tensor t in Weights.Values)
            {
                t.Dispose();
            }

            foreach (OnnxTaskHead head in Heads)
            {
                head.Head.Dispose();
            }
        }
    }

    private static Tensor Pixels(VisionTransformerConfig config, int batch, long seed) =>
        ModelTestData.Images(config, batch, seed).reshape(batch, -1);

    /// <summary>
    /// Runs every batch size through one session and returns the largest deviation from the reference over all outputs:
    /// absolute, or with <paramref name="relative"/> divided by the output's largest magnitude (at least 1).
    /// </summary>
    private static double MaxDeviation(Fixture fixture, byte[] model, OnnxScoreKind scores, bool includeFeatures = true,
        GraphOptimizationLevel optimization = GraphOptimizationLevel.ORT_ENABLE_ALL, bool relative = false)
    {
        double Deviation(Tensor actual, Tensor expected) =>
            ModelTestData.MaxAbsDiff(actual, expected) / (relative ? Math.Max(1, expected.abs().max().item<float>()) : 1);

        using var runner = new OnnxRuntimeRunner(model, optimization);
        double worst = 0;
        foreach (int batch in BatchSizes)
        {
            using var scope = NewDisposeScope();
            Tensor pixels = Pixels(fixture.Config, batch, seed: 100 + batch);
            var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
            var (features, logits) = fixture.Reference(pixels);

            Assert.HasCount(fixture.Heads.Length + (includeFeatures ? 1 : 0), outputs);
            if (includeFeatures)
            {
                CollectionAssert.AreEqual(features.shape, outputs[DenseVitOnnxExporter.FeaturesName].shape);
                worst = Math.Max(worst, Deviation(outputs[DenseVitOnnxExporter.FeaturesName], features));
            }

            foreach (OnnxTaskHead head in fixture.Heads)
            {
                Tensor expected = scores == OnnxScoreKind.Logits ? logits[head.Task] : nn.functional.softmax(logits[head.Task], 1);
                Tensor actual = outputs[OnnxTaskHead.ScoresOutputName(head.Task)];
                CollectionAssert.AreEqual(new long[] { batch, head.Head.ClassCount }, actual.shape);
                worst = Math.Max(worst, Deviation(actual, expected));
            }
        }

        return worst;
    }

    [TestMethod]
    public void GrayscaleQuickGeluWithLinearHeadsMatchesTorchForEveryBatchSize()
    {
        using var fixture = new Fixture(ModelTestData.TinyGray(activation: VisionActivation.QuickGelu), seed: 1,
            ("digits", ClassificationHeadKind.Linear, 10), ("letters", ClassificationHeadKind.Linear, 3));
        var options = new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits };

        double deviation = MaxDeviation(fixture, fixture.Exporter(options).Export(), OnnxScoreKind.Logits);

        Assert.IsLessThanOrEqualTo(Float32Tolerance, deviation);
    }

    [TestMethod]
    public void GrayscaleGeluWithProbabilitiesMatchesTorch()
    {
        using var fixture = new Fixture(ModelTestData.TinyGray(activation: VisionActivation.Gelu), seed: 2,
            ("fashion", ClassificationHeadKind.Linear, 10), ("digits", ClassificationHeadKind.Linear, 10));

        double deviation = MaxDeviation(fixture, fixture.Exporter().Export(), OnnxScoreKind.Probabilities);

        Assert.IsLessThanOrEqualTo(Float32Tolerance, deviation);
    }

    [TestMethod]
    public void RgbWithProjectionAndClipHeadMatchesTorch()
    {
        using var fixture = new Fixture(ModelTestData.TinyRgb(layers: 3), seed: 3,
            ("zero_shot", ClassificationHeadKind.Clip, 5), ("probe", ClassificationHeadKind.Linear, 4));
        Assert.AreEqual(10, fixture.Config.FeatureDim);

        byte[] logits = fixture.Exporter(new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits }).Export();
        byte[] probabilities = fixture.Exporter(new VitOnnxExportOptions { IncludeFeatures = false }).Export();

        // CLIP logits are scaled by 100, so the bound is on values of that size.
        Assert.IsLessThanOrEqualTo(Float32Tolerance, MaxDeviation(fixture, logits, OnnxScoreKind.Logits));
        Assert.IsLessThanOrEqualTo(Float32Tolerance, MaxDeviation(fixture, probabilities, OnnxScoreKind.Probabilities, includeFeatures: false));
    }

    [TestMethod]
    public void TheGraphItselfMatchesWithoutRuntimeOptimisations()
    {
        // ONNX Runtime fuses LayerNorm/Gelu/MatMul+Add patterns by default; with every optimisation off the
        // operators run as written, so this checks the graph's semantics rather than the fused kernels.
        using var fixture = new Fixture(ModelTestData.TinyGray(activation: VisionActivation.Gelu, projectionDim: 6), seed: 4,
            ("a", ClassificationHeadKind.Clip, 3), ("b", ClassificationHeadKind.Linear, 2));
        byte[] model = fixture.Exporter(new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits }).Export();

        Assert.IsLessThanOrEqualTo(Float32Tolerance, MaxDeviation(fixture, model, OnnxScoreKind.Logits, optimization: GraphOptimizationLevel.ORT_DISABLE_ALL));
    }

    [TestMethod]
    public void Float16WeightsEqualTorchOnRoundedWeightsAndStayCloseToFloat32()
    {
        using var fixture = new Fixture(ModelTestData.TinyRgb(), seed: 5,
            ("zero_shot", ClassificationHeadKind.Clip, 5), ("probe", ClassificationHeadKind.Linear, 4));
        var options = new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits, WeightPrecision = OnnxWeightPrecision.Float16 };
        byte[] half = fixture.Exporter(options).Export();
        byte[] full = fixture.Exporter(options with { WeightPrecision = OnnxWeightPrecision.Float32 }).Export();

        // Matrices (rank ≥ 2) are stored as float16 and widened in the graph; vectors stay float32. Torch on the same
        // rounded tensors gives the float32 bound.
        using var scope = NewDisposeScope();
        static Tensor Round(Tensor t) => t.dim() >= 2 ? t.detach().to(ScalarType.Float16).to(ScalarType.Float32) : t.detach();
        var rounded = fixture.Weights.ToDictionary(kv => kv.Key, kv => Round(kv.Value));
        var roundedHeads = fixture.Heads.ToDictionary(h => h.Task, h => h.Head.Kind == ClassificationHeadKind.Linear
            ? ClassificationHead.Linear(h.Head.ClassNames, Round(h.Head.Weight), h.Head.Bias!.detach())
            : ClassificationHead.Clip(h.Head.ClassNames, Round(h.Head.Weight), h.Head.LogitScale!.item<float>()));
        try
        {
            using var runner = new OnnxRuntimeRunner(half);
            foreach (int batch in BatchSizes)
            {
                Tensor pixels = Pixels(fixture.Config, batch, seed: 6);
                var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
                var (features, _) = fixture.Reference(pixels, rounded);
                Assert.IsLessThanOrEqualTo(Float32Tolerance, ModelTestData.MaxAbsDiff(outputs[DenseVitOnnxExporter.FeaturesName], features));
                foreach (var (task, head) in roundedHeads)
                {
                    Assert.IsLessThanOrEqualTo(Float32Tolerance, ModelTestData.MaxAbsDiff(outputs[OnnxTaskHead.ScoresOutputName(task)], head.Forward(features)), task);
                }
            }
        }
        finally
        {
            foreach (ClassificationHead head in roundedHeads.Values)
            {
                head.Dispose();
            }
        }

        // Against the float32 model: float16 rounds each weight by up to 2^-11 relative; through the network that stays
        // within the documented bound relative to each output's magnitude.
        double deviation = MaxDeviation(fixture, half, OnnxScoreKind.Logits, relative: true);
        Console.WriteLine($"float16 storage: max deviation {deviation:G3} relative to the output magnitude");
        Assert.IsLessThanOrEqualTo(Float16RelativeTolerance, deviation);
        Assert.IsGreaterThan(Float32Tolerance, MaxDeviation(fixture, half, OnnxScoreKind.Logits), "float16 storage should be visible at all");

        // Every matrix element saves exactly 2 bytes of initializer data; nothing else changes size.
        long matrixElements = fixture.Weights.Values.Concat(fixture.Heads.Select(h => (Tensor)h.Head.Weight)).Where(t => t.dim() >= 2).Sum(t => t.numel());
        long fullBytes = fixture.Exporter(options with { WeightPrecision = OnnxWeightPrecision.Float32 }).BuildGraph().InitializerBytes;
        Assert.AreEqual(fullBytes - 2 * matrixElements, fixture.Exporter(options).BuildGraph().InitializerBytes);
        Console.WriteLine($"file size: float32 {full.Length} bytes, float16 {half.Length} bytes ({matrixElements} matrix elements)");
    }

    /// <summary>
    /// Float16-stored weights against the float32 reference: max |Δ| ≤ this × max(1, max |output|) per output. Weight
    /// rounding is ≤ 2^-11 ≈ 4.9e-4 relative; a few layers amplify it a few times.
    /// </summary>
    private const double Float16RelativeTolerance = 5e-3;

    [TestMethod]
    public void TheSameInputGivesTheSameBytes()
    {
        using var fixture = new Fixture(ModelTestData.TinyRgb(layers: 1), seed: 7,
            ("zero_shot", ClassificationHeadKind.Clip, 5), ("probe", ClassificationHeadKind.Linear, 4));
        var options = new VitOnnxExportOptions { WeightPrecision = OnnxWeightPrecision.Float16, Metadata = new Dictionary<string, string> { ["b"] = "2", ["a"] = "1" } };

        byte[] first = fixture.Exporter(options).Export();
        byte[] second = fixture.Exporter(options).Export();

        CollectionAssert.AreEqual(first, second);
        using var scope = NewDisposeScope();
        fixture.Weights[VisionTransformerNames.ClassEmbedding].PlusScalarInPlace(1e-3);
        CollectionAssert.AreNotEqual(first, fixture.Exporter(options).Export());
    }

    [TestMethod]
    public void InterfaceAndMetadataDescribeTheTasks()
    {
        using var fixture = new Fixture(ModelTestData.TinyGray(layers: 1, projectionDim: 8), seed: 8,
            ("digits", ClassificationHeadKind.Linear, 10), ("shapes", ClassificationHeadKind.Clip, 4));
        var options = new VitOnnxExportOptions { Description = "test model", Metadata = new Dictionary<string, string> { ["mlmerge.merge_method"] = "task_arithmetic" } };

        byte[] bytes = fixture.Exporter(options).Export();

        using var runner = new OnnxRuntimeRunner(bytes);
        var input = runner.Session.InputMetadata.Single();
        Assert.AreEqual("pixels", input.Key);
        CollectionAssert.AreEqual(new[] { -1, 28 * 28 }, input.Value.Dimensions);
        Assert.AreEqual("batch", input.Value.SymbolicDimensions[0]);
        CollectionAssert.AreEqual(new[] { "scores_digits", "scores_shapes", "features" }, runner.Session.OutputNames.ToArray());
        CollectionAssert.AreEqual(new[] { -1, 4 }, runner.Session.OutputMetadata["scores_shapes"].Dimensions);
        CollectionAssert.AreEqual(new[] { -1, 8 }, runner.Session.OutputMetadata["features"].Dimensions);
        Assert.AreEqual("test model", runner.Session.ModelMetadata.Description);

        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("task_arithmetic", metadata["mlmerge.merge_method"]);
        Assert.AreEqual("0-1", metadata["mlmerge.input_range"], "the graph takes pixels in [0, 1] and normalises them itself");
        var info = VitOnnxModelInfo.FromMetadata(metadata);
        Assert.AreEqual("dense_vit", info.ModelKind);
        Assert.AreEqual(fixture.Config, info.Config);
        Assert.AreEqual("pixels", info.InputName);
        Assert.AreEqual("features", info.FeaturesName);
        Assert.AreEqual(OnnxScoreKind.Probabilities, info.Scores);
        Assert.AreEqual(OnnxWeightPrecision.Float32, info.WeightPrecision);
        CollectionAssert.AreEqual(new[] { "digits", "shapes" }, info.Tasks.Select(t => t.Name).ToArray());
        Assert.AreEqual("scores_shapes", info.Tasks[1].ScoresOutput);
        Assert.AreEqual(ClassificationHeadKind.Clip, info.Tasks[1].HeadKind);
        CollectionAssert.AreEqual(fixture.Heads[0].Head.ClassNames.ToArray(), info.Tasks[0].ClassNames.ToArray());

        // Weights keep their Hugging Face names; opset 17 / IR 8.
        var model = ModelProto.Parser.ParseFrom(bytes);
        Assert.AreEqual(8, model.IrVersion);
        Assert.AreEqual(17, model.OpsetImport.Single().Version);
        var initializers = model.Graph.Initializer.Select(i => i.Name).ToHashSet();
        Assert.IsTrue(VisionTransformerNames.Shapes(fixture.Config).All(s => initializers.Contains(s.Name)));
        Assert.Contains("heads.shapes.logit_scale", initializers);
    }

    [TestMethod]
    public void InconsistentInputsAreRefusedBeforeAnyWork()
    {
        using var fixture = new Fixture(ModelTestData.TinyGray(layers: 1), seed: 9, ("a", ClassificationHeadKind.Linear, 2));
        using var wide = ClassificationHead.CreateLinear(["x", "y"], fixture.Config.FeatureDim + 1, seed: 1);

        var error = Assert.ThrowsExactly<ArgumentException>(() => new DenseVitOnnxExporter(fixture.Config, fixture.Weights,
            [fixture.Heads[0], fixture.Heads[0], new OnnxTaskHead("wide", wide)],
            new VitOnnxExportOptions { Metadata = new Dictionary<string, string> { ["mlmerge.tasks"] = "[]" } }));
        StringAssert.Contains(error.Message, "task 'a' is given 2 times");
        StringAssert.Contains(error.Message, "the head of task 'wide' takes 33 features but the backbone produces 32");
        StringAssert.Contains(error.Message, "metadata key 'mlmerge.tasks' is written by the exporter itself");
        Assert.ThrowsExactly<ArgumentException>(() => new DenseVitOnnxExporter(fixture.Config, fixture.Weights, []));
        Assert.ThrowsExactly<ArgumentException>(() => new OnnxTaskHead("bad name", wide));
        Assert.ThrowsExactly<ArgumentException>(() => new OnnxTaskHead("", wide));
    }

    [TestMethod]
    public void MissingOrMisshapenWeightsAreNamed()
    {
        using var fixture = new Fixture(ModelTestData.TinyGray(layers: 1), seed: 10, ("a", ClassificationHeadKind.Linear, 2));
        string fc1 = VisionTransformerNames.Weight(VisionTransformerNames.Layer(0).Fc1);
        var missing = new Dictionary<string, Tensor>(fixture.Weights);
        missing.Remove(fc1);
        var error = Assert.ThrowsExactly<KeyNotFoundException>(() => new DenseVitOnnxExporter(fixture.Config, missing, fixture.Heads).Export());
        StringAssert.Contains(error.Message, fc1);

        using var scope = NewDisposeScope();
        var misshapen = new Dictionary<string, Tensor>(fixture.Weights) { [fc1] = zeros(3, 3) };
        var shapeError = Assert.ThrowsExactly<ArgumentException>(() => new DenseVitOnnxExporter(fixture.Config, misshapen, fixture.Heads).Export());
        StringAssert.Contains(shapeError.Message, $"'{fc1}' has shape [3, 3]; the config expects [64, 32]");
    }

    [TestMethod]
    public void SaveWritesTheExportedBytes()
    {
        using var dir = new TempDirectory();
        using var fixture = new Fixture(ModelTestData.TinyGray(layers: 1), seed: 11, ("a", ClassificationHeadKind.Linear, 2));
        string path = dir.File("model.onnx");

        long length = fixture.Exporter().Save(path);

        CollectionAssert.AreEqual(fixture.Exporter().Export(), File.ReadAllBytes(path));
        Assert.AreEqual(new FileInfo(path).Length, length);
        CollectionAssert.AreEqual(new[] { path }, Directory.GetFiles(dir.Path));
    }
}
