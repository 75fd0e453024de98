using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>How far apart two models' weights are: what alignment lowers.</summary>
internal static class WeightDistance
{
    /// <summary>
    /// The L2 distance √(Σ ‖a − b‖²) over every tensor of <paramref name="a"/> (or only <paramref name="names"/>), in float64.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor is missing from <paramref name="b"/> or has another shape there.</exception>
    public static double L2(IReadOnlyDictionary<string, Tensor> a, IReadOnlyDictionary<string, Tensor> b, IEnumerable<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        double sum = 0;
        foreach (string name in names ?? a.Keys)
        {
            if (!a.TryGetValue(name, out var x) || !b.TryGetValue(name, out var y))
                throw new ArgumentException($"'{name}' is not in both models.", nameof(b));
            if (!x.shape.SequenceEqual(y.shape))
                throw new ArgumentException($"'{name}' has shapes [{string.Join(", ", x.shape)}] and [{string.Join(", ", y.shape)}].", nameof(b));
            using var scope = NewDisposeScope();
            sum += (x.detach().to(ScalarType.Float64) - y.detach().to(ScalarType.Float64).to(x.device)).Squared().sum().item<double>();
        }

        return Math.Sqrt(sum);
    }
}
