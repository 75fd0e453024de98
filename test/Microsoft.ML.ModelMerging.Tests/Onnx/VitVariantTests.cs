using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>
/// A variant described once for both back ends (<see cref="IVitVariant"/>): the exporter emits its ONNX hooks at the places
/// the TorchSharp forward calls its hooks, so ONNX Runtime scores what TorchSharp computes. The variant here uses every
/// extension point the coming methods need: a per-channel affine correction at every activation site (TACT's shape) and
/// low-rank adapters on linear layers (LoRA's shape).
/// </summary>
[TestClass]
public sealed class VitVariantTests
{
    private sealed class AffineAndLowRankVariant : IVitVariant
    {
        private readonly Dictionary<(ActivationSite, int), (Tensor Scale, Tensor Shift)> _affine = [];
        private readonly Dictionary<string, (Tensor A, Tensor B)> _adapters = new(StringComparer.Ordinal);

        public AffineAndLowRankVariant(VisionTransformerConfig config, Generator generator)
        {
            foreach (ActivationSite site in Enum.GetValues<ActivationSite>())
            {
                for (int block = site == ActivationSite.Embeddings ? -1 : 0; block < (site == ActivationSite.Embeddings ? 0 : config.Layers); block++)
                {
                    long channels = site == ActivationSite.MlpHidden ? config.MlpSize : config.Width;
                    _affine[(site, block)] = (randn([channels], generator: generator).Times(0.2).PlusScalar(1), randn([channels], generator: generator).Times(0.1));
                }
            }

            for (int block = 0; block < config.Layers; block++)
            {
                var names = VisionTransformerNames.Layer(block);
                foreach (var (prefix, inputs, outputs) in new[] { (names.QProj, config.Width, config.Width), (names.VProj, config.Width, config.Width), (names.Fc1, config.Width, config.MlpSize) })
                {
                    _adapters[prefix] = (randn([2, inputs], generator: generator).Times(0.3), randn([outputs, 2], generator: generator).Times(0.3));
                }
            }

            Forward = new ForwardHooks
            {
                SiteTransform = (site, block, x) => (x * _affine[(site, block)].Scale).Plus(_affine[(site, block)].Shift),
                LinearAdapter = (prefix, input, output) =>
                    _adapters.TryGetValue(prefix, out var ab) ? output.Plus(input.matmul(ab.A.t()).matmul(ab.B.t())) : output,
            };
            Onnx = new OnnxForwardHooks
            {
                SiteTransform = (emitter, site, block, x) =>
                {
                    var (scale, shift) = _affine[(site, block)];
                    string key = $"affine.{site}.{block}";
                    return emitter.Builder.Add(emitter.Builder.Mul(x, emitter.AddTensor(key + ".scale", scale)), emitter.AddTensor(key + ".shift", shift));
                },
                LinearAdapter = (emitter, prefix, input, output) =>
                {
                    if (!_adapters.TryGetValue(prefix, out var ab)) return output;
                    string a = emitter.AddTensor(prefix + ".lora_A", ab.A), b = emitter.AddTensor(prefix + ".lora_B", ab.B);
                    var g = emitter.Builder;
                    return g.Add(output, g.MatMul(g.MatMul(input, g.Transpose(a, [1, 0])), g.Transpose(b, [1, 0])));
                },
            };
        }

        public ForwardHooks Forward { get; }

        public OnnxForwardHooks Onnx { get; }
    }

    [TestMethod]
    public void OnnxRuntimeScoresWhatTheForwardComputesWithEveryHook()
    {
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyGray(activation: VisionActivation.QuickGelu);
        var weights = ModelTestData.RandomWeights(config, seed: 31);
        using var head = ClassificationHead.CreateLinear(["a", "b", "c"], config.FeatureDim, seed: 32);
        var variant = new AffineAndLowRankVariant(config, new Generator(33));
        var exporter = new DenseVitOnnxExporter(config, weights, [new OnnxTaskHead("t", head)], new VitOnnxExportOptions { Scores = OnnxScoreKind.Logits }, variant);
        using var runner = new OnnxRuntimeRunner(exporter.Export());
        foreach (int batch in new[] { 1, 4 })
        {
            Tensor pixels = ModelTestData.Images(config, batch, seed: 40 + batch).reshape(batch, -1);
            using var noGrad = no_grad();
            Tensor expected = exporter.Features(pixels);
            Tensor plain = VisionTransformer.Forward(config, weights, pixels);
            var outputs = runner.Run(DenseVitOnnxExporter.InputName, pixels);
            Assert.IsLessThan(1e-4, ModelTestData.MaxAbsDiff(outputs[DenseVitOnnxExporter.FeaturesName], expected), $"features, batch {batch}");
            Assert.IsLessThan(1e-4, ModelTestData.MaxAbsDiff(outputs[OnnxTaskHead.ScoresOutputName("t")], head.Forward(expected)), $"logits, batch {batch}");
            Assert.IsGreaterThan(0.1, ModelTestData.MaxAbsDiff(expected, plain), "the hooks change the computation, so both back ends really ran them");
        }
    }
}
