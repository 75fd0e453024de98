using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>
/// The per-block MLP extension point with the computation a WEMoE exporter needs: weights formed per sample,
/// W(x) = W0 + reshape(r(x)·T), applied with a batched MatMul, checked against the same formula in TorchSharp through
/// <see cref="ForwardHooks.MlpOverride"/>.
/// </summary>
[TestClass]
public sealed class MlpExtensionPointTests
{
    private const int Experts = 3;

    /// <summary>fc1 of every block routed per sample: r = mean_tokens(x)·R [B,E], W1(x) = W0 + reshape(r·T) [B,m,d].</summary>
    private sealed class RoutedFc1Exporter(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, IEnumerable<OnnxTaskHead> heads,
        IReadOnlyList<Tensor> routers, IReadOnlyList<Tensor> taskVectors, VitOnnxExportOptions? options = null)
        : DenseVitOnnxExporter(config, weights, heads, options)
    {
        protected override string ModelKind => "routed_fc1_test";

        protected override void AddMetadata(OnnxGraphBuilder builder) => builder.SetMetadata("test.experts", Experts.ToString(System.Globalization.CultureInfo.InvariantCulture));

        protected override string EmitMlp(VitOnnxEmitter emitter, int block, string mlpInput)
        {
            OnnxGraphBuilder g = emitter.Builder;
            EncoderLayerNames names = VisionTransformerNames.Layer(block);
            string router = emitter.AddTensor($"routers.{block}", routers[block]);
            string stacked = emitter.AddTensor($"task_vectors.{block}.fc1", taskVectors[block]);

            string r = g.MatMul(g.ReduceMean(mlpInput, [1], keepDims: false), router, "routing");                    // [B,E]
            string w = g.Reshape(g.MatMul(r, stacked), [-1, Config.MlpSize, Config.Width], "merged_delta");          // [B,m,d]
            w = g.Add(w, emitter.Weight(VisionTransformerNames.Weight(names.Fc1)), "merged_fc1");
            string hidden = g.MatMul(mlpInput, g.Transpose(w, [0, 2, 1]));                                           // [B,T,m]
            hidden = g.Add(hidden, emitter.Weight(VisionTransformerNames.Bias(names.Fc1)));
            return emitter.Linear(emitter.Activation(hidden), names.Fc2);
        }
    }

    [TestMethod]
    public void PerSampleMergedWeightsMatchTorchForEveryBatchSize()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(activation: VisionActivation.QuickGelu);
        var weights = ModelTestData.RandomWeights(config, seed: 21);
        var generator = new Generator(22);
        var routers = Enumerable.Range(0, config.Layers).Select(_ => randn([config.Width, Experts], generator: generator).Times(0.5)).ToList();
        var taskVectors = Enumerable.Range(0, config.Layers).Select(_ => randn([Experts, (long)config.MlpSize * config.Width], generator: generator).Times(0.1)).ToList();
        using var head = ClassificationHead.CreateLinear(["a", "b", "c"], config.FeatureDim, seed: 23);
        var exporter = new RoutedFc1Exporter(config, weights, [new OnnxTaskHead("t", head)], routers, taskVectors,
            new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits });

        var hooks = new ForwardHooks
        {
            MlpOverride = (block, x) =>
            {
                var names = VisionTransformerNames.Layer(block);
                Tensor r = x.mean([1]).matmul(routers[block]);                                                       // [B,E]
                Tensor w = r.matmul(taskVectors[block]).view(-1, config.MlpSize, config.Width).Plus(weights[VisionTransformerNames.Weight(names.Fc1)]);
                Tensor hidden = x.bmm(w.transpose(1, 2)).Plus(weights[VisionTransformerNames.Bias(names.Fc1)]);
                return nn.functional.linear(config.Activation.Apply(hidden),
                    weights[VisionTransformerNames.Weight(names.Fc2)], weights[VisionTransformerNames.Bias(names.Fc2)]);
            },
        };

        using var runner = new OnnxRuntimeRunner(exporter.Export());
        foreach (int batch in new[] { 1, 5 })
        {
            Tensor pixels = ModelTestData.Images(config, batch, seed: 30 + batch).reshape(batch, -1);
            var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
            Tensor features = VisionTransformer.Forward(config, weights, pixels, hooks);

            Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs["features"], features));
            Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(outputs["scores_t"], head.Forward(features)));
            // The routing matters: the dense model gives other features.
            Assert.IsGreaterThan(1e-2, ModelTestData.MaxAbsDiff(outputs["features"], VisionTransformer.Forward(config, weights, pixels)));
        }

        var metadata = runner.Session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("routed_fc1_test", VitOnnxModelInfo.FromMetadata(metadata).ModelKind);
        Assert.AreEqual("3", metadata["test.experts"]);
    }
}
