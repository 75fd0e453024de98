using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

/// <summary>
/// A merged adapter (<c>merge --param adapter-space=factors</c>) records the base it was merged against: applied to a pool of
/// another base, its ΔW would give another model than the one merged, so <c>eval</c> and <c>export-onnx</c> refuse it.
/// </summary>
internal static class MergedAdapterBase
{
    /// <exception cref="ArgumentException">The adapter records a base whose content differs from the pool's.</exception>
    public static void EnsurePoolBase(string adapterPath, string zoo, PoolManifest manifest)
    {
        IReadOnlyDictionary<string, string> metadata;
        using (var weights = Checkpoint.Open(Path.Combine(adapterPath, PeftAdapterFolder.WeightsFileName))) metadata = weights.Metadata;
        if (StreamingMergeDriver.RecordedInputs(metadata).FirstOrDefault(i => i.GetValueOrDefault("role") == "base") is { } recordedBase
            && manifest.Pretrained is { } poolBase
            && recordedBase.GetValueOrDefault("content_sha256") is { } baseHash
            && CheckpointFingerprint.Of(Path.Combine(zoo, poolBase)).ContentSha256 != baseHash)
            throw new ArgumentException($"{adapterPath} was merged against the base {recordedBase.GetValueOrDefault("path")}, and {zoo} has another base " +
                "(its content differs): an adapter is applied to the base it was merged for.");
    }
}
