namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>Accuracy of one model on one task's validation and test splits.</summary>
public sealed record SplitAccuracy(double Validation, double Test);
