namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>A checkpoint file is malformed or does not match what was expected. The message names the file and the tensor.</summary>
public sealed class CheckpointFormatException : Exception
{
    /// <summary>The file that is malformed (a shard, an index or a single file).</summary>
    public string FilePath { get; }
    /// <summary>The tensor concerned, or null when the problem is the file as a whole.</summary>
    public string? TensorName { get; }

    /// <summary>Creates the exception; the message is "<paramref name="filePath"/>: tensor '<paramref name="tensorName"/>': <paramref name="problem"/>".</summary>
    /// <param name="filePath">The malformed file.</param>
    /// <param name="tensorName">The tensor concerned, or null.</param>
    /// <param name="problem">What is wrong, as a sentence.</param>
    public CheckpointFormatException(string filePath, string? tensorName, string problem)
        : base(Compose(filePath, tensorName, problem))
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    private static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}
