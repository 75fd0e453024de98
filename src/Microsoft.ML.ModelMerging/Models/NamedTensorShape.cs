namespace Microsoft.ML.ModelMerging.Models;

/// <summary>A tensor name with the shape a model expects for it.</summary>
internal sealed record NamedTensorShape(string Name, long[] Shape)
{
    /// <summary>Formats a shape like <c>[768, 3, 32, 32]</c> for messages.</summary>
    public static string Format(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    public override string ToString() => $"{Name} {Format(Shape)}";
}
