using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A merged adapter (<c>merge --param adapter-space=factors</c>) records the base it was merged against: applied to another
/// base, its ΔW gives another model than the one merged, so every reader that applies it to a base checks that base first.
/// </summary>
public static class MergedAdapterBase
{
    /// <summary>Refuses <paramref name="basePath"/> when the adapter records a base of other content (an adapter that records none passes).</summary>
    /// <param name="adapterFolder">A PEFT adapter folder.</param>
    /// <param name="basePath">The base it is about to be applied to.</param>
    /// <param name="baseName">How the base is named in the error, e.g. <c>the base of &lt;pool&gt;</c>.</param>
    /// <exception cref="ArgumentException">The recorded base's content differs from <paramref name="basePath"/>'s.</exception>
    public static void Ensure(string adapterFolder, string basePath, string baseName)
    {
        IReadOnlyDictionary<string, string> metadata;
        using (var weights = Checkpoint.Open(Path.Combine(adapterFolder, PeftAdapterFolder.WeightsFileName))) metadata = weights.Metadata;
        if (StreamingMergeDriver.RecordedInputs(metadata).FirstOrDefault(i => i.GetValueOrDefault("role") == "base") is { } recorded
            && recorded.GetValueOrDefault("content_sha256") is { } hash
            && CheckpointFingerprint.Of(basePath).ContentSha256 != hash)
            throw new ArgumentException($"{adapterFolder} was merged against the base {recorded.GetValueOrDefault("path")}, and {baseName} ({basePath}) has other " +
                "content: an adapter is applied to the base it was merged for.");
    }
}
