namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// Typed shorthands for the ONNX operators our exporters emit, each appending one node (plus any int64 constants it
/// needs) to the builder and returning the output's name. Semantics are the ONNX operator specs' at the builder's opset;
/// where an operator changed between opsets 17 and 26 (reductions take <c>axes</c> as an input from 18), the right form
/// is chosen from <see cref="OnnxGraphBuilder.Opset"/>.
/// </summary>
internal static class OnnxOps
{
    public static string Add(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("Add", [a, b], name: name);

    public static string Sub(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("Sub", [a, b], name: name);

    public static string Mul(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("Mul", [a, b], name: name);

    public static string Div(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("Div", [a, b], name: name);

    public static string Max(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("Max", [a, b], name: name);

    /// <summary>Matrix product with NumPy broadcasting of the leading (batch) dimensions.</summary>
    public static string MatMul(this OnnxGraphBuilder g, string a, string b, string? name = null) => g.Node("MatMul", [a, b], name: name);

    /// <summary>alpha·A'·B' + beta·C on 2-D inputs, with A' = Aᵀ if <paramref name="transA"/> and B' = Bᵀ if <paramref name="transB"/>.</summary>
    public static string Gemm(this OnnxGraphBuilder g, string a, string b, string? c = null, bool transA = false, bool transB = false, string? name = null)
    {
        var attributes = new List<OnnxAttribute>();
        if (transA)
        {
            attributes.Add(OnnxAttribute.Int("transA", 1));
        }

        if (transB)
        {
            attributes.Add(OnnxAttribute.Int("transB", 1));
        }

        return g.Node("Gemm", c is null ? [a, b] : [a, b, c], attributes, name);
    }

    public static string Sigmoid(this OnnxGraphBuilder g, string x, string? name = null) => g.Node("Sigmoid", [x], name: name);

    public static string Erf(this OnnxGraphBuilder g, string x, string? name = null) => g.Node("Erf", [x], name: name);

    public static string Relu(this OnnxGraphBuilder g, string x, string? name = null) => g.Node("Relu", [x], name: name);

    public static string Identity(this OnnxGraphBuilder g, string x, string? name = null) => g.Node("Identity", [x], name: name);

    public static string Softmax(this OnnxGraphBuilder g, string x, long axis = -1, string? name = null) =>
        g.Node("Softmax", [x], [OnnxAttribute.Int("axis", axis)], name);

    public static string Cast(this OnnxGraphBuilder g, string x, OnnxElementType to, string? name = null) =>
        g.Node("Cast", [x], [OnnxAttribute.Int("to", (long)to)], name);

    /// <summary>Reshape to <paramref name="shape"/>, where 0 copies the input's dimension and -1 is inferred.</summary>
    public static string Reshape(this OnnxGraphBuilder g, string x, long[] shape, string? name = null) =>
        g.Node("Reshape", [x, g.Constant("shape", shape)], name: name);

    /// <summary>Reshape to a shape computed in the graph (an int64 1-D value).</summary>
    public static string Reshape(this OnnxGraphBuilder g, string x, string shape, string? name = null) =>
        g.Node("Reshape", [x, shape], name: name);

    public static string Transpose(this OnnxGraphBuilder g, string x, long[] perm, string? name = null) =>
        g.Node("Transpose", [x], [OnnxAttribute.Ints("perm", perm)], name);

    public static string Concat(this OnnxGraphBuilder g, long axis, IReadOnlyList<string> inputs, string? name = null) =>
        g.Node("Concat", inputs, [OnnxAttribute.Int("axis", axis)], name);

    /// <summary>Selects <paramref name="index"/> along <paramref name="axis"/>, removing that dimension (a scalar index).</summary>
    public static string Gather(this OnnxGraphBuilder g, string x, long index, long axis, string? name = null) =>
        g.Node("Gather", [x, g.Constant("index", [index], [])], [OnnxAttribute.Int("axis", axis)], name);

    /// <summary>Broadcasts <paramref name="x"/> to the shape held by the int64 value <paramref name="shape"/>.</summary>
    public static string Expand(this OnnxGraphBuilder g, string x, string shape, string? name = null) => g.Node("Expand", [x, shape], name: name);

    /// <summary>The dimensions [start, end) of <paramref name="x"/>'s shape as an int64 1-D value (opset 15 slicing attributes).</summary>
    public static string Shape(this OnnxGraphBuilder g, string x, long? start = null, long? end = null, string? name = null)
    {
        var attributes = new List<OnnxAttribute>();
        if (start is long s)
        {
            attributes.Add(OnnxAttribute.Int("start", s));
        }

        if (end is long e)
        {
            attributes.Add(OnnxAttribute.Int("end", e));
        }

        return g.Node("Shape", [x], attributes, name);
    }

    /// <summary>LayerNormalization (opset 17) over the dimensions from <paramref name="axis"/> on.</summary>
    public static string LayerNormalization(this OnnxGraphBuilder g, string x, string scale, string bias, float epsilon, long axis = -1, string? name = null) =>
        g.Node("LayerNormalization", [x, scale, bias], [OnnxAttribute.Int("axis", axis), OnnxAttribute.Float("epsilon", epsilon)], name);

    /// <summary>2-D convolution without padding or bias, square kernel and stride (a ViT patch embedding).</summary>
    public static string Conv(this OnnxGraphBuilder g, string x, string weight, long kernel, long stride, string? name = null) =>
        g.Node("Conv", [x, weight], [OnnxAttribute.Ints("kernel_shape", kernel, kernel), OnnxAttribute.Ints("strides", stride, stride)], name);

    public static string ReduceMean(this OnnxGraphBuilder g, string x, long[] axes, bool keepDims, string? name = null) =>
        Reduce(g, "ReduceMean", 18, x, axes, keepDims, name);

    public static string ReduceSum(this OnnxGraphBuilder g, string x, long[] axes, bool keepDims, string? name = null) =>
        Reduce(g, "ReduceSum", 13, x, axes, keepDims, name);

    public static string ReduceL2(this OnnxGraphBuilder g, string x, long[] axes, bool keepDims, string? name = null) =>
        Reduce(g, "ReduceL2", 18, x, axes, keepDims, name);

    /// <summary>A reduction whose <c>axes</c> moved from an attribute to an input at opset <paramref name="axesInputSince"/>.</summary>
    private static string Reduce(OnnxGraphBuilder g, string op, int axesInputSince, string x, long[] axes, bool keepDims, string? name)
    {
        ArgumentNullException.ThrowIfNull(axes);
        OnnxAttribute keep = OnnxAttribute.Int("keepdims", keepDims ? 1 : 0);
        return g.Opset >= axesInputSince
            ? g.Node(op, [x, g.Constant("axes", axes)], [keep], name)
            : g.Node(op, [x], [OnnxAttribute.Ints("axes", axes), keep], name);
    }
}
