namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>How TIES combines the trimmed task-vector entries that agree with the elected sign.</summary>
public enum TiesMergeFunction
{
    /// <summary>Their sum (FusionBench default).</summary>
    Sum,

    /// <summary>Their sum divided by how many are non-zero (at least 1).</summary>
    Mean,
}
