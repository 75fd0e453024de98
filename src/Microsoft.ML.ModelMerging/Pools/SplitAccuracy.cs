namespace Microsoft.ML.ModelMerging.Pools;

/// <summary>Accuracy of one model on one task's validation and test splits.</summary>
public sealed record SplitAccuracy(double Validation, double Test)
{
    /// <summary>Rounded to 4 decimals, as manifests record accuracies (so a rebuild reproduces them to the byte).</summary>
    public SplitAccuracy Rounded() => new(Math.Round(Validation, 4), Math.Round(Test, 4));
}
