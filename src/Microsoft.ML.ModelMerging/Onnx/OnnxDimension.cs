using System.Globalization;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>One dimension of a graph input or output: a fixed size, or a symbol such as <c>batch</c> that the runtime binds per call.</summary>
internal readonly record struct OnnxDimension
{
    private OnnxDimension(long? size, string? symbol)
    {
        Size = size;
        Symbol = symbol;
    }

    /// <summary>The fixed size, or null for a symbolic dimension.</summary>
    public long? Size { get; }

    /// <summary>The symbol of a symbolic dimension, or null for a fixed one.</summary>
    public string? Symbol { get; }

    /// <summary>The symbolic batch dimension every exporter of this library uses.</summary>
    public static OnnxDimension Batch { get; } = Symbolic("batch");

    public static OnnxDimension Fixed(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        return new OnnxDimension(size, null);
    }

    public static OnnxDimension Symbolic(string symbol)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(symbol);
        return new OnnxDimension(null, symbol);
    }

    public static implicit operator OnnxDimension(long size) => Fixed(size);

    public static implicit operator OnnxDimension(string symbol) => Symbolic(symbol);

    public override string ToString() => Symbol ?? Size!.Value.ToString(CultureInfo.InvariantCulture);
}
