namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>The output columns of one task.</summary>
/// <param name="Task">Task name (an expert of the set).</param>
/// <param name="ScoreColumnName">Vector of <see cref="float"/>, one value per class in <paramref name="ClassNames"/> order.</param>
/// <param name="PredictedLabelColumnName">Text: the class name with the highest score.</param>
/// <param name="ClassNames">Class names in score order.</param>
public sealed record MergeExpertsTaskOutput(string Task, string ScoreColumnName, string PredictedLabelColumnName, IReadOnlyList<string> ClassNames);
