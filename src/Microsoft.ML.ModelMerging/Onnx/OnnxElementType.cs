namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>Element types of ONNX tensors we write; the values are ONNX's <c>TensorProto.DataType</c> numbers.</summary>
internal enum OnnxElementType
{
    Float = 1,
    UInt8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    BFloat16 = 16,
}

/// <summary>How floating-point weights are stored in an exported model.</summary>
public enum OnnxWeightPrecision
{
    /// <summary>IEEE float32, exactly the values given.</summary>
    Float32,

    /// <summary>
    /// IEEE float16 (round to nearest even), widened to float32 by a <c>Cast</c> node in the graph: half the file size,
    /// computation still in float32. ONNX Runtime folds the casts when the session is created.
    /// </summary>
    Float16,
}
