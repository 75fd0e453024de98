namespace Microsoft.ML.ModelMerging.Data;

/// <summary>How many images each part of a task holds.</summary>
public readonly record struct SplitSizes(int Train, int Validation, int Test)
{
    /// <summary>Images in all three parts.</summary>
    public int Total => Train + Validation + Test;

    /// <summary>E.g. <c>3000 train / 500 validation / 1000 test</c>.</summary>
    public override string ToString() => $"{Train} train / {Validation} validation / {Test} test";
}
