namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// The ONNX operator-set versions our builder writes and the IR version stamped with each (the IR version of the ONNX
/// release that introduced the opset). ONNX Runtime 1.31 reads opsets up to 26 and IR versions up to 13.
/// </summary>
internal static class OnnxOpset
{
    /// <summary>Lowest supported opset: 17 brings <c>LayerNormalization</c>.</summary>
    public const int Minimum = 17;

    /// <summary>Highest supported opset (the newest ONNX Runtime 1.31 runs).</summary>
    public const int Maximum = 26;

    /// <summary>The opset our exporters use: 17, the oldest with <c>LayerNormalization</c>, so older runtimes load the models too.</summary>
    public const int Default = 17;

    /// <summary>The IR version for an opset of the default domain.</summary>
    public static long IrVersionFor(int opset) => opset switch
    {
        17 or 18 => 8,   // ONNX 1.12, 1.13
        19 or 20 => 9,   // ONNX 1.14, 1.15
        21 or 22 => 10,  // ONNX 1.16, 1.17
        23 => 11,        // ONNX 1.18 (IR 11, May 2025)
        24 => 12,        // ONNX 1.19 (IR 12, August 2025)
        25 or 26 => 13,  // ONNX 1.20 onwards (IR 13, November 2025), the newest IR ONNX Runtime 1.31 reads
        _ => throw new ArgumentOutOfRangeException(nameof(opset), opset, $"Supported opsets are {Minimum} to {Maximum}."),
    };
}
