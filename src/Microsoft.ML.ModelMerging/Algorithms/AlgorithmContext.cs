using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Onnx;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>Reported by long-running algorithms: the stage, its progress, and for test-time adaptation the step just done.</summary>
public sealed record AlgorithmProgress(string Stage, long Done, long Total, Adaptation.AdaptationProgress? Step = null)
{
    /// <summary>The loss of the step just done (test-time adaptation only).</summary>
    public double? Loss => Step?.Loss;
}

/// <summary>Where a test-time adaptation keeps its resumable checkpoint (the <c>adapt</c> job's directory).</summary>
/// <param name="Path">The checkpoint file.</param>
/// <param name="Every">Write it every this many steps (and after the last); 0 = only after the last.</param>
/// <param name="Resume">Continue from the checkpoint when it exists.</param>
/// <param name="Interval">Also write one when this much time has passed since the last; null = by steps only.</param>
public sealed record AdaptationCheckpointing(string Path, int Every, bool Resume, TimeSpan? Interval = null);

/// <summary>Everything an <see cref="IMergeAlgorithm.Run"/> call is given besides the pool and the parameters.</summary>
public sealed record AlgorithmContext
{
    /// <summary>The tasks whose heads the result has; null = every task of the pool.</summary>
    public IReadOnlyList<string>? Tasks { get; init; }

    /// <summary>
    /// Unlabeled images for test-time adaptation, by task; null = the test images of the pool's tasks (the benchmark
    /// protocol). ML.NET passes the images given to <c>Fit</c>.
    /// </summary>
    public UnlabeledImages? Images { get; init; }

    /// <summary>Where the pool's benchmark data lives (default: <see cref="BenchmarkSources.Default"/>).</summary>
    public BenchmarkSources? Sources { get; init; }

    /// <summary>Options the result's exporters are created with (precision, score kind, metadata).</summary>
    public VitOnnxExportOptions ExportOptions { get; init; } = new();

    /// <summary>Test-time adaptation: resumable checkpoints; null = none.</summary>
    public AdaptationCheckpointing? Checkpointing { get; init; }

    /// <summary>Called synchronously from the algorithm's thread.</summary>
    public IProgress<AlgorithmProgress>? Progress { get; init; }

    /// <summary>Stops the run; algorithms check it between steps and tensors.</summary>
    public CancellationToken Cancellation { get; init; }
}
