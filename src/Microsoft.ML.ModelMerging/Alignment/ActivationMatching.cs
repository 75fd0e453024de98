using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// Activation matching (Git Re-Basin's data-based alignment): units of two models are paired by how well their activations
/// correlate on the same images, one exact linear assignment per permutation group. The residual stream is matched on
/// its values after the embeddings and after every block (summed correlations: one permutation serves them all), each
/// MLP's hidden units on their pre-activations, and each block's attention heads as blocks on the q and k projections
/// (the q/k dimensions within a head) and the v projection (the v dimensions). Unlike weight matching it needs images,
/// and it does not depend on how far apart the weights are, which is why it aligns differently initialised models better.
/// </summary>
internal static class ActivationMatching
{
    /// <summary>The permutations of <paramref name="other"/> whose units best correlate with <paramref name="reference"/>'s on <paramref name="images"/>.</summary>
    /// <param name="config">The architecture of both models.</param>
    /// <param name="reference">The model the other is matched to.</param>
    /// <param name="other">The model to permute.</param>
    /// <param name="images">Unlabeled images, [N,C,H,W] in [0,1]; every token of every image is one observation.</param>
    /// <param name="chunk">Images per forward pass (correlation sums accumulate over chunks).</param>
    /// <param name="cancellation">Stops the matching between chunks.</param>
    public static PermutationSet Match(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> reference,
        IReadOnlyDictionary<string, Tensor> other, Tensor images, int chunk = 64, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(other);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        var spec = VisionTransformerPermutations.Spec(config);
        // One correlation per observation point; a group sums those of the points its permutation acts on.
        var correlations = new Dictionary<string, (string Permutation, CrossCorrelation Sums)>(StringComparer.Ordinal);
        try
        {
            for (long start = 0; start < images.shape[0]; start += chunk)
            {
                cancellation.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                Tensor batch = images.narrow(0, start, Math.Min(chunk, images.shape[0] - start));
                var a = Activations(config, reference, batch);
                var b = Activations(config, other, batch);
                foreach (var (key, (permutation, value)) in a)
                {
                    if (!correlations.TryGetValue(key, out var point))
                        correlations[key] = point = (permutation, new CrossCorrelation(value.shape[^1]));
                    point.Sums.Add(value, b[key].Value);
                }
            }

            var values = new Dictionary<string, int[]>(StringComparer.Ordinal);
            foreach (var group in spec.Groups)
            {
                cancellation.ThrowIfCancellationRequested();
                int n = spec.Sizes[group.Members[0]];
                var similarity = group.Members.Select(m => Sum(correlations.Values.Where(c => c.Permutation == m).Select(c => c.Sums.Correlation()), n)).ToList();
                int[][] solved = WeightMatching.SolveGroup(n, group.Blocks, similarity);
                for (int m = 0; m < group.Members.Count; m++) values[group.Members[m]] = solved[m];
            }

            return new PermutationSet(values);
        }
        finally
        {
            foreach (var (_, sums) in correlations.Values) sums.Dispose();
        }
    }

    private static double[] Sum(IEnumerable<double[]> matrices, int n)
    {
        var total = new double[n * n];
        foreach (var matrix in matrices)
        {
            for (int i = 0; i < total.Length; i++) total[i] += matrix[i];
        }

        return total;
    }

    /// <summary>
    /// The activations a group is matched on, by a key unique per observation point, each with the permutation it informs:
    /// [rows, units] with every token a row.
    /// </summary>
    private static Dictionary<string, (string Permutation, Tensor Value)> Activations(VisionTransformerConfig config,
        IReadOnlyDictionary<string, Tensor> weights, Tensor images)
    {
        var seen = new Dictionary<string, (string, Tensor)>(StringComparer.Ordinal);
        Tensor Rows(Tensor x) => x.reshape(-1, x.shape[^1]);
        var hooks = new ForwardHooks
        {
            SiteTransform = (site, block, x) =>
            {
                switch (site)
                {
                    case ActivationSite.Embeddings:
                    case ActivationSite.BlockOutput:
                        seen[$"residual.{block}"] = (VisionTransformerPermutations.Residual, Rows(x));
                        break;
                    case ActivationSite.MlpHidden:
                        seen[$"mlp.{block}"] = (VisionTransformerPermutations.Mlp(block), Rows(x));
                        break;
                }

                return x;
            },
            LinearAdapter = (prefix, input, output) =>
            {
                // vision_model.encoder.layers.N.self_attn.{q,k,v}_proj: q and k share the within-head permutation.
                string[] parts = prefix.Split('.');
                if (parts.Length >= 6 && parts[2] == "layers" && int.TryParse(parts[3], out int layer))
                {
                    switch (parts[^1])
                    {
                        case "q_proj":
                        case "k_proj":
                            seen[$"{parts[^1]}.{layer}"] = (VisionTransformerPermutations.QueryKey(layer), Rows(output));
                            break;
                        case "v_proj":
                            seen[$"v.{layer}"] = (VisionTransformerPermutations.Value(layer), Rows(output));
                            break;
                    }
                }

                return output;
            },
        };
        VisionTransformer.Forward(config, weights, images, hooks);
        return seen;
    }

    /// <summary>Sums for the Pearson correlation of every reference unit with every other unit, in float64.</summary>
    private sealed class CrossCorrelation(long units) : IDisposable
    {
        // Created inside a chunk's dispose scope but living across chunks: detached, disposed by Dispose.
        private readonly Tensor _sumA = Owned(zeros(units, dtype: ScalarType.Float64)), _sumB = Owned(zeros(units, dtype: ScalarType.Float64));
        private readonly Tensor _squaresA = Owned(zeros(units, dtype: ScalarType.Float64)), _squaresB = Owned(zeros(units, dtype: ScalarType.Float64));
        private readonly Tensor _products = Owned(zeros(units, units, dtype: ScalarType.Float64));

        private static Tensor Owned(Tensor t) => t.DetachFromDisposeScope();
        private long _count;

        public void Add(Tensor a, Tensor b)
        {
            using var scope = NewDisposeScope();
            Tensor x = a.to_type(ScalarType.Float64).cpu(), y = b.to_type(ScalarType.Float64).cpu();
            _sumA.PlusInPlace(x.sum(0L));
            _sumB.PlusInPlace(y.sum(0L));
            _squaresA.PlusInPlace(x.Squared().sum(0L));
            _squaresB.PlusInPlace(y.Squared().sum(0L));
            _products.addmm_(x.t(), y);
            _count += x.shape[0];
        }

        /// <summary>corr[i, j] row-major; a constant unit correlates 0 with everything.</summary>
        public double[] Correlation()
        {
            using var scope = NewDisposeScope();
            Tensor meanA = _sumA.DividedBy(_count), meanB = _sumB.DividedBy(_count);
            Tensor covariance = _products.DividedBy(_count) - meanA.unsqueeze(1) * meanB.unsqueeze(0);
            Tensor stdA = (_squaresA.DividedBy(_count) - meanA.Squared()).AtLeast(0).sqrt();
            Tensor stdB = (_squaresB.DividedBy(_count) - meanB.Squared()).AtLeast(0).sqrt();
            Tensor correlation = covariance / (stdA.unsqueeze(1) * stdB.unsqueeze(0)).PlusScalar(1e-12);
            return correlation.contiguous().data<double>().ToArray();
        }

        public void Dispose()
        {
            foreach (var t in new[] { _sumA, _sumB, _squaresA, _squaresB, _products }) t.Dispose();
        }
    }
}
