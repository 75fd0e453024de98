namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>The models given to a merge do not fit together (missing or extra tensor, shape, dtype, NaN/Inf).</summary>
public sealed class MergeInputException : Exception
{
    /// <summary>Creates the exception with the default message.</summary>
    public MergeInputException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public MergeInputException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    public MergeInputException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming the tensor and, when one is at fault, the expert.</summary>
    /// <param name="message">What is wrong, naming the tensor and expert in words.</param>
    /// <param name="tensorName">The tensor at fault, or null.</param>
    /// <param name="expertIndex">The zero-based index of the expert at fault; null for the base model or none.</param>
    public MergeInputException(string message, string? tensorName, int? expertIndex = null)
        : base(message)
    {
        TensorName = tensorName;
        ExpertIndex = expertIndex;
    }

    /// <summary>The tensor at fault, when one is.</summary>
    public string? TensorName { get; }

    /// <summary>The zero-based index of the expert at fault; null when the base model (or no single expert) is at fault.</summary>
    public int? ExpertIndex { get; }

    /// <summary>"expert 2 ('mnist')" or "expert 2": how messages name an expert.</summary>
    internal static string DescribeExpert(int index, IReadOnlyList<string>? names) =>
        names is not null && index < names.Count && !string.IsNullOrEmpty(names[index])
            ? $"expert {index} ('{names[index]}')"
            : $"expert {index}";

    internal static string FormatShape(ReadOnlySpan<long> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";
}
