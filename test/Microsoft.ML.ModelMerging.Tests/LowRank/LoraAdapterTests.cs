using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.LowRank;

[TestClass]
public sealed class LoraAdapterTests
{
    private static readonly VisionTransformerConfig Config = ModelTestData.TinyGray(layers: 2);

    private static Tensor Noise(long[] shape, ulong seed, ScalarType dtype = ScalarType.Float32) =>
        randn(shape, dtype: dtype, generator: new Generator(seed));

    private static void Set(Tensor target, Tensor value)
    {
        using var noGrad = no_grad();
        target.copy_(value);
    }

    [TestMethod]
    public void InitialisationIsPeftsKaimingUniformAndZeroSharedBySeedAndIndependentOfOtherTargets()
    {
        using var scope = NewDisposeScope();
        var options = new LoraOptions { Rank = 4, Alpha = 8, Targets = ["q_proj", "v_proj", "fc1", "fc2"], Seed = 7 };
        using var adapter = LoraAdapter.Initialize(Config, options);
        using var again = LoraAdapter.Initialize(Config, options);
        using var other = LoraAdapter.Initialize(Config, options with { Seed = 8 });
        using var fewer = LoraAdapter.Initialize(Config, options with { Targets = ["v_proj"] });

        Assert.AreEqual(2 * 4, adapter.Modules.Count);
        Assert.AreEqual(2.0, adapter.Scale);
        foreach (var m in adapter.Modules)
        {
            double bound = 1 / Math.Sqrt(m.Target.InFeatures);
            CollectionAssert.AreEqual(new[] { 4L, m.Target.InFeatures }, m.A.shape);
            CollectionAssert.AreEqual(new[] { m.Target.OutFeatures, 4L }, m.B.shape);
            Assert.IsLessThanOrEqualTo(bound, (double)m.A.abs().max().item<float>());
            Assert.IsGreaterThan(0.8 * bound, (double)m.A.abs().max().item<float>());
            Assert.AreEqual(0L, m.B.count_nonzero().item<long>());
            Assert.IsTrue(m.B0IsZero);
            Assert.IsTrue(m.A.eq(again.Module(m.Target.Prefix)!.A).all().item<bool>());
            Assert.IsFalse(m.A.eq(other.Module(m.Target.Prefix)!.A).all().item<bool>());
        }
        string v1 = VisionTransformerNames.Layer(1).VProj;
        Assert.IsTrue(adapter.Module(v1)!.A.eq(fewer.Module(v1)!.A).all().item<bool>());
        Assert.AreEqual("fc1", LoraOptions.ShortName(VisionTransformerNames.Layer(0).Fc1));
        CollectionAssert.AreEqual(new[] { (long)Config.MlpSize, Config.Width }, new[] { adapter.Module(VisionTransformerNames.Layer(0).Fc1)!.Target.OutFeatures, adapter.Module(VisionTransformerNames.Layer(0).Fc1)!.Target.InFeatures });
    }

    [TestMethod]
    public void LinearisedModuleWithZeroB0IsScaledBTimesA0AndAGetsNoGradient()
    {
        using var scope = NewDisposeScope();
        var options = new LoraOptions { Rank = 4, Alpha = 12, Linearized = true, Seed = 3 };
        using var adapter = LoraAdapter.Initialize(Config, options);
        var m = adapter.Modules[0];
        Tensor a0 = m.A0.clone();
        Set(m.B, Noise(m.B.shape, 1));
        Set(m.A, m.A.Plus(Noise(m.A.shape, 2))); // moving A must not change the linearised module when B0 = 0
        Tensor x = Noise([3, 5, Config.Width], 4);
        Tensor zero = zeros(3, 5, Config.Width);

        Tensor output = adapter.Apply(m.Target.Prefix, x, zero);
        Tensor expected = x.matmul(a0.t()).matmul(m.B.detach().t()).Times(3.0);
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(expected, output));

        output.sum().backward();
        Assert.IsTrue(m.A.grad is null || m.A.grad.abs().max().item<float>() == 0, "A received a gradient");
        Assert.IsNotNull(m.B.grad);
        Assert.IsGreaterThan(0f, m.B.grad.abs().max().item<float>());
        Assert.IsFalse(adapter.Trainable.Contains(m.A));
        Assert.AreEqual(adapter.Modules.Sum(mm => mm.B.numel()), adapter.TrainableParameterCount);
        using var lora = LoraAdapter.Initialize(Config, options with { Linearized = false });
        Assert.AreEqual(2 * adapter.TrainableParameterCount, lora.TrainableParameterCount);
    }

    [TestMethod]
    public void LinearisedModuleWithNonZeroB0EqualsTheFiniteDifferenceJvpOfTheLoraModule()
    {
        using var scope = NewDisposeScope();
        var target = new LoraTarget("vision_model.encoder.layers.0.self_attn.q_proj", InFeatures: 6, OutFeatures: 5);
        var f64 = ScalarType.Float64;
        Tensor a0 = Noise([3, 6], 1, f64), b0 = Noise([5, 3], 2, f64), dA = Noise([3, 6], 3, f64), dB = Noise([5, 3], 4, f64);
        var options = new LoraOptions { Rank = 3, Alpha = 6, Targets = ["q_proj"] };
        using var linearised = LoraAdapter.FromInitialization(options with { Linearized = true }, [(target, a0, b0)]);
        using var lora = LoraAdapter.FromInitialization(options, [(target, a0, b0)]);
        Assert.IsFalse(linearised.Modules[0].B0IsZero);
        Tensor x = Noise([4, 6], 5, f64), zero = zeros(4, 5, dtype: f64);

        Set(linearised.Modules[0].A, a0.Plus(dA));
        Set(linearised.Modules[0].B, b0.Plus(dB));
        Tensor fLin = linearised.Apply(target.Prefix, x, zero);

        Tensor Lora(double t)
        {
            Set(lora.Modules[0].A, a0.Plus(dA.Times(t)));
            Set(lora.Modules[0].B, b0.Plus(dB.Times(t)));
            using var noGrad = no_grad();
            return lora.Apply(target.Prefix, x, zero);
        }
        const double h = 1e-4;
        Tensor jvp = (Lora(h) - Lora(-h)).DividedBy(2 * h);
        Tensor expected = Lora(0).Plus(jvp);
        Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(expected, fLin));
        // ... and it is not the LoRA module itself (the second-order term s·dB·dA·x is left out).
        Assert.IsGreaterThan(1e-2, ModelTestData.MaxAbsDiff(Lora(1), fLin));
        // Its dense ΔW is the linearised module's weight.
        Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(x.matmul(linearised.Delta(target.Prefix).to_type(f64).t()), fLin));
    }

    [TestMethod]
    public void AdaptedForwardEqualsTheDenseForwardOfThePretrainedPlusDeltaW()
    {
        using var scope = NewDisposeScope();
        var weights = ModelTestData.RandomWeights(Config, seed: 11);
        Tensor images = ModelTestData.Images(Config, batch: 3, seed: 12);
        foreach (bool linearized in new[] { false, true })
        {
            using var adapter = LoraAdapter.Initialize(Config, new LoraOptions { Rank = 4, Alpha = 8, Targets = ["q_proj", "v_proj", "out_proj", "fc2"], Linearized = linearized, Seed = 1 });
            ulong seed = 20;
            foreach (var p in adapter.Trainable) Set(p, Noise(p.shape, seed++).Times(0.3));

            Tensor hooked = VisionTransformer.Forward(Config, weights, images, adapter.Hooks);
            var dense = adapter.Densify(weights);
            Tensor expected = VisionTransformer.Forward(Config, dense, images);

            Assert.IsLessThan(1e-5, ModelTestData.MaxAbsDiff(expected, hooked), linearized ? "l-lora" : "lora");
            Assert.IsGreaterThan(1e-3, ModelTestData.MaxAbsDiff(VisionTransformer.Forward(Config, weights, images), hooked));
            string untouched = VisionTransformerNames.Weight(VisionTransformerNames.Layer(0).KProj);
            Assert.IsTrue(dense[untouched].eq(weights[untouched]).all().item<bool>());
            foreach (var t in dense.Values) t.Dispose();
        }
    }

    [TestMethod]
    public void OptionsRefuseUnknownTargetsAndModes()
    {
        Assert.ThrowsExactly<ArgumentException>(() => new LoraOptions { Targets = ["q"] }.Validate());
        Assert.ThrowsExactly<ArgumentException>(() => new LoraOptions { Rank = 0 }.Validate());
        Assert.ThrowsExactly<ArgumentException>(() => FineTuningModes.Parse("qlora"));
        Assert.AreEqual(FineTuningModes.LinearizedLora, FineTuningModes.Parse("L-LoRA"));
    }
}
