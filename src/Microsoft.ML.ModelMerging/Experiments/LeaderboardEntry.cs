using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Experiments;

/// <summary>One row of a merge experiment's leaderboard: the best setting of one method, measured on the test split.</summary>
public sealed record LeaderboardEntry
{
    /// <summary>The method's registry name (<c>method @pool</c> in a leaderboard over several pools).</summary>
    public required string Method { get; init; }
    /// <summary>The chosen setting, e.g. <c>task-arithmetic lambda=0.3</c>.</summary>
    public required string Candidate { get; init; }
    /// <summary>The chosen setting as method and parameters: what <c>MergeExperts</c> needs to build this model again.</summary>
    public MergeCandidate? Setting { get; init; }
    /// <summary>How many settings were tried on the validation split to choose it.</summary>
    public required int CandidatesTried { get; init; }
    /// <summary>Ranking score of the chosen setting on the validation split.</summary>
    public required double ValidationScore { get; init; }
    /// <summary>Test accuracy per task of the chosen setting.</summary>
    public required TaskAccuracies Test { get; init; }
    /// <summary>Mean test accuracy over the tasks.</summary>
    public required double TestAverage { get; init; }
    /// <summary>Mean over the tasks of test accuracy / the individual expert's.</summary>
    public required double TestNormalized { get; init; }
    /// <summary>Lowest test accuracy of any task.</summary>
    public required double TestWorst { get; init; }
    /// <summary>Seconds the merge (or adaptation) of the chosen setting took, evaluation not included.</summary>
    public required double MergeSeconds { get; init; }
    /// <summary>Seconds spent on this method in all: every setting merged and evaluated, then the chosen one measured.</summary>
    public double SearchSeconds { get; init; }
    /// <summary>True when the model is one per task (TALL masks, EMR): ranked apart from the task-agnostic methods.</summary>
    public bool NeedsTaskAtInference { get; init; }
    /// <summary>Parameters held at inference: one backbone (or upscaled model) plus every head.</summary>
    public required long ParameterCount { get; init; }
    /// <summary>Size of the exported ONNX model; null when the method has no exporter yet.</summary>
    public long? ModelBytes { get; init; }
    /// <summary>ONNX Runtime latency of one image (batch 1, median); null when not measured.</summary>
    public double? LatencyMilliseconds { get; init; }
    /// <summary>Remarks shown in the report (e.g. stopped by the budget, adapted on the unlabeled test images, one ONNX model per task); empty when none.</summary>
    public string Note { get; init; } = "";
    /// <summary>The pool the entry merged, in a leaderboard over several pools (<see cref="Leaderboard.Combine"/>); null otherwise.</summary>
    public string? Pool { get; init; }
}
