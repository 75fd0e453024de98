using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>
/// The cosine similarity of a pool's task vectors τ_i = θ_i − θ0, each flattened over every backbone tensor: how much
/// the experts' updates overlap (near 0: nearly orthogonal, little interference when added).
/// </summary>
internal static class TaskVectorSimilarity
{
    /// <summary>The n×n matrix of cosines, in the pool's task order (float64 sums).</summary>
    public static double[,] Cosine(ExpertPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        var tasks = pool.TaskNames;
        int n = tasks.Count;
        var dots = new double[n, n];
        var names = pool.Pretrained.Where(kv => kv.Value.is_floating_point()).Select(kv => kv.Key).Order(StringComparer.Ordinal).ToList();
        foreach (string name in names)
        {
            using var scope = NewDisposeScope();
            var theta0 = pool.Pretrained[name].to_type(ScalarType.Float64).flatten();
            var tau = stack(tasks.Select(t => pool.Expert(t)[name].to_type(ScalarType.Float64).flatten() - theta0).ToArray());
            var gram = tau.matmul(tau.t()).cpu();
            var values = gram.data<double>().ToArray();
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    dots[i, j] += values[i * n + j];
        }

        var cosine = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                cosine[i, j] = dots[i, i] > 0 && dots[j, j] > 0 ? dots[i, j] / Math.Sqrt(dots[i, i] * dots[j, j]) : 0;
        return cosine;
    }

    /// <summary>The mean of the off-diagonal entries.</summary>
    public static double MeanOffDiagonal(double[,] matrix)
    {
        int n = matrix.GetLength(0);
        if (n < 2) return 0;
        double sum = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                if (i != j) sum += matrix[i, j];
        return sum / (n * (n - 1));
    }
}
