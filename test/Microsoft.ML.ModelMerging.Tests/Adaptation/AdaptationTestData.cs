using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

/// <summary>
/// A tiny pre-trained ViT (width 16, 2 blocks), experts = pre-trained + noise, random heads and unlabeled images, and
/// reference computations written independently of the library code under test.
/// </summary>
internal sealed class AdaptationTestData : IDisposable
{
    public const double Lambda = 0.3;

    private AdaptationTestData(VisionTransformerConfig config, Dictionary<string, Tensor> pretrained, List<Dictionary<string, Tensor>> experts,
        List<AdaptationTask> tasks)
    {
        Config = config;
        Pretrained = pretrained;
        Experts = experts;
        Tasks = tasks;
    }

    public VisionTransformerConfig Config { get; }

    public Dictionary<string, Tensor> Pretrained { get; }

    public List<Dictionary<string, Tensor>> Experts { get; }

    public IReadOnlyList<IReadOnlyDictionary<string, Tensor>> ExpertList => Experts;

    public List<AdaptationTask> Tasks { get; }

    public static VisionTransformerConfig TinyConfig() => new()
    {
        ImageSize = 28,
        Channels = 1,
        PatchSize = 7,
        Width = 16,
        Layers = 2,
        Heads = 2,
        MlpSize = 32,
    };

    /// <param name="experts">Number of experts and tasks.</param>
    /// <param name="imagesPerTask">Unlabeled images per task.</param>
    /// <param name="expertNoise">Std of the noise added to the pre-trained weights to make each expert.</param>
    public static AdaptationTestData Create(int experts = 2, int imagesPerTask = 24, double expertNoise = 0.1, long seed = 1)
    {
        using var scope = NewDisposeScope();
        var config = TinyConfig();
        var pretrained = ModelTestData.RandomWeights(config, seed);
        var generator = new Generator((ulong)(seed + 1000));
        var expertWeights = Enumerable.Range(0, experts).Select(_ => pretrained.ToDictionary(
            kv => kv.Key, kv => (kv.Value.Plus(randn(kv.Value.shape, generator: generator).Times(expertNoise))).DetachFromDisposeScope(), StringComparer.Ordinal)).ToList();
        foreach (var tensor in pretrained.Values)
        {
            tensor.DetachFromDisposeScope();
        }

        var tasks = Enumerable.Range(0, experts).Select(i =>
        {
            var head = ClassificationHead.CreateLinear([.. Enumerable.Range(0, 5).Select(c => $"c{c}")], config.FeatureDim, seed: seed * 100 + i);
            // Scaled up so the predictions are far from uniform and entropy has somewhere to go.
            using (no_grad())
            {
                head.Weight.TimesInPlace(4);
            }

            Tensor images = ModelTestData.Images(config, imagesPerTask, seed * 10 + i).DetachFromDisposeScope();
            return new AdaptationTask($"task{i}", images, head);
        }).ToList();
        return new AdaptationTestData(config, pretrained, expertWeights, tasks);
    }

    /// <summary>θ0 + λ·Σ_i (θ_i − θ0) for every tensor, summed expert by expert.</summary>
    public Dictionary<string, Tensor> TaskArithmetic(double lambda = Lambda) => Pretrained.ToDictionary(kv => kv.Key, kv =>
    {
        Tensor sum = zeros_like(kv.Value);
        foreach (var expert in Experts)
        {
            sum = sum.Plus(expert[kv.Key] - kv.Value);
        }

        return kv.Value.Plus(sum.Times(lambda));
    }, StringComparer.Ordinal);

    /// <summary>θ0 + Σ_i r_i·(θ_i − θ0) for one tensor.</summary>
    public Tensor Combine(string name, IReadOnlyList<double> coefficients)
    {
        Tensor result = Pretrained[name].clone();
        for (int i = 0; i < Experts.Count; i++)
        {
            result = result.Plus((Experts[i][name] - Pretrained[name]).Times(coefficients[i]));
        }

        return result;
    }

    /// <summary>Sum over tasks of the mean entropy of all the task's images (no gradients).</summary>
    public double TotalEntropy(Func<Tensor, Tensor> features)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return Tasks.Sum(task => ReferenceMeanEntropy(task.Head.Forward(features(task.Images))));
    }

    /// <summary>Entropy −Σ p·log p of softmax rows averaged over the batch, in float64 from the definition.</summary>
    public static double ReferenceMeanEntropy(Tensor logits)
    {
        double[] values = logits.to(ScalarType.Float64).data<double>().ToArray();
        long rows = logits.shape[0], columns = logits.shape[1];
        double total = 0;
        for (long r = 0; r < rows; r++)
        {
            var row = values.Skip((int)(r * columns)).Take((int)columns).ToArray();
            double max = row.Max();
            double[] exp = [.. row.Select(v => Math.Exp(v - max))];
            double z = exp.Sum();
            total -= exp.Sum(e => e / z * Math.Log(e / z));
        }

        return total / rows;
    }

    /// <summary>Clones of every tensor of a dictionary (to compare before and after).</summary>
    public static Dictionary<string, Tensor> Snapshot(IEnumerable<KeyValuePair<string, Tensor>> tensors) =>
        tensors.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone(), StringComparer.Ordinal);

    public static Dictionary<string, Tensor> Snapshot<T>(IReadOnlyDictionary<string, T> tensors) where T : Tensor =>
        Snapshot(tensors.Select(kv => KeyValuePair.Create(kv.Key, (Tensor)kv.Value)));

    public void Dispose()
    {
        foreach (var tensor in Pretrained.Values.Concat(Experts.SelectMany(e => e.Values)))
        {
            tensor.Dispose();
        }

        foreach (var task in Tasks)
        {
            task.Images.Dispose();
            task.Head.Dispose();
        }
    }
}

/// <summary>
/// The adaptation tests run libtorch on one intra-op thread: their tensors are tiny, and on a shared, busy machine two
/// threads spend most of a training step waiting for each other (measured: ~10× slower). Restored after each class.
/// </summary>
internal static class SingleTorchThread
{
    private static int _previous;

    public static void Enter()
    {
        _previous = get_num_threads();
        set_num_threads(1);
    }

    public static void Exit() => set_num_threads(_previous);
}
