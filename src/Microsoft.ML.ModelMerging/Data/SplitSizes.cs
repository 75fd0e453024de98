namespace Microsoft.ML.ModelMerging.Data;

/// <summary>How many images each part of a task holds.</summary>
public readonly record struct SplitSizes(int Train, int Validation, int Test)
{
    public int Total => Train + Validation + Test;

    public override string ToString() => $"{Train} train / {Validation} validation / {Test} test";
}
