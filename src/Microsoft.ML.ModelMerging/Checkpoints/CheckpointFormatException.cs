namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>A checkpoint file is malformed or does not match what was expected. The message names the file and the tensor.</summary>
public sealed class CheckpointFormatException : Exception
{
    public string FilePath { get; }
    public string? TensorName { get; }

    public CheckpointFormatException(string filePath, string? tensorName, string problem)
        : base(Compose(filePath, tensorName, problem))
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    private static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}
