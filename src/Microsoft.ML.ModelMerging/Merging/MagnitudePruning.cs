using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Keeps the largest-magnitude entries of task vectors. One rule everywhere (TIES trimming, E-WEMoE pruning), the
/// one FusionBench uses: with n entries and keep fraction k, let m = ⌊k·n⌋; the threshold is the (m+1)-th largest
/// |v| (torch <c>kthvalue(n − m)</c>), or the smallest |v| when m = n; entries with |v| ≥ threshold are kept, so ties
/// at the threshold are all kept.
/// </summary>
internal static class MagnitudePruning
{
    /// <summary>
    /// The 1-based rank, counted from the largest, of the magnitude used as threshold among <paramref name="count"/>
    /// entries; 0 when there are none.
    /// </summary>
    public static long ThresholdRank(long count, double keep)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        EnsureKeepFraction(keep);
        if (count == 0)
        {
            return 0;
        }

        long kept = (long)Math.Floor(count * keep);
        return Math.Min(kept + 1, count);
    }

    /// <summary>
    /// The threshold magnitude of every row of <paramref name="rows"/> ([rows, ...], trimmed over everything after the
    /// first dimension), float32 of shape [rows].
    /// </summary>
    public static Tensor RowThresholds(Tensor rows, double keep)
    {
        ArgumentNullException.ThrowIfNull(rows);
        using var scope = NewDisposeScope();
        long rowCount = rows.shape[0];
        var magnitudes = rows.to_type(ScalarType.Float32).reshape(rowCount, rowCount == 0 ? 0 : rows.numel() / rowCount).abs();
        long count = magnitudes.shape[1];
        long rank = ThresholdRank(count, keep);
        if (rank == 0)
        {
            return zeros(rowCount, dtype: ScalarType.Float32, device: rows.device).MoveToOuterDisposeScope();
        }

        var (values, _) = magnitudes.kthvalue(count - rank + 1, dim: 1);
        return values.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Magnitude-prunes one task vector tensor: entries below the threshold of the rule above become 0.
    /// Same dtype and shape as the input; the caller owns the result.
    /// </summary>
    public static Tensor Prune(Tensor taskVector, double keep)
    {
        ArgumentNullException.ThrowIfNull(taskVector);
        using var scope = NewDisposeScope();
        var threshold = RowThresholds(taskVector.reshape(1, -1), keep);
        var kept = taskVector.abs().ge(threshold.to_type(taskVector.dtype));
        return taskVector.mul(kept).MoveToOuterDisposeScope();
    }

    internal static void EnsureKeepFraction(double keep)
    {
        if (!(keep > 0 && keep <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(keep), keep, "The keep fraction must be in (0, 1].");
        }
    }
}
