using System.Globalization;
using Google.Protobuf;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Onnx.Proto;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>One task of an adapted model: its scores output and its predicted-label output (text).</summary>
internal sealed record AdaptedTask(string Task, string ScoresOutput, string LabelOutput, IReadOnlyList<string> ClassNames);

/// <summary>
/// Fits an exported Vision Transformer to the ML.NET pipeline it runs in. ML.NET's <c>OnnxTransformer</c> binds columns to
/// graph inputs and outputs by name and copies values as they are, so the graph itself:
/// <list type="bullet">
/// <item>takes the input column by its name, with its row size, and converts it to the exporter's [0, 1] C·H·W pixels
/// (the luma of the RGB planes for a single-channel model fed 3·H·W values; divided by 255 for <see cref="PixelRange.Byte"/>);</item>
/// <item>stores float16 weights as <c>Constant</c> nodes instead of initializers, which ML.NET cannot type;</item>
/// <item>adds per task <c>label_&lt;task&gt;</c>: the class name (string) of the arg-max score, so the labels travel inside
/// the model bytes that ML.NET saves.</item>
/// </list>
/// The model's metadata records the new input contract (<c>mlmerge.input</c>, <c>mlmerge.mlnet.*</c>).
/// </summary>
internal static class MlNetOnnxAdapter
{
    public const string InputRangeKey = "mlmerge.mlnet.input_range";
    public const string InputLayoutKey = "mlmerge.mlnet.input_layout";
    private const string Batch = "batch";

    /// <summary>The label output of <paramref name="task"/>.</summary>
    public static string LabelOutputName(string task) => "label_" + task;

    /// <summary>Adapts <paramref name="builder"/>'s graph (its model proto is edited in place) and returns the proto with the task outputs.</summary>
    public static (ModelProto Model, IReadOnlyList<AdaptedTask> Tasks) Adapt(OnnxGraphBuilder builder, string inputColumn, PixelInputLayout layout, PixelRange range)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumn);
        VitOnnxModelInfo info = VitOnnxModelInfo.FromMetadata(builder.Metadata);
        ModelProto model = builder.ToModelProto();
        GraphProto graph = model.Graph;
        var names = new NameSet(graph);

        var tasks = info.Tasks.Select(t => new AdaptedTask(t.Name, t.ScoresOutput, LabelOutputName(t.Name), t.ClassNames)).ToArray();
        var outputNames = new HashSet<string>(tasks.SelectMany(t => new[] { t.ScoresOutput, t.LabelOutput }), StringComparer.Ordinal);
        if (outputNames.Contains(inputColumn))
        {
            throw new ArgumentException($"The input column '{inputColumn}' has the name of an output of the merged model; rename the column.");
        }

        // Drop outputs ML.NET does not read (the features), so every declared output is one the adapter knows.
        foreach (ValueInfoProto extra in graph.Output.Where(o => !outputNames.Contains(o.Name)).ToArray())
        {
            graph.Output.Remove(extra);
        }

        // Input: the column's name, free it if an internal value has it; the exporter's input becomes an internal value.
        string original = info.InputName;
        if (!string.Equals(inputColumn, original, StringComparison.Ordinal) && names.Contains(inputColumn))
        {
            Rename(graph, inputColumn, names.Fresh(inputColumn + "_internal"));
        }

        string unit = names.Fresh("pixels_unit");
        foreach (NodeProto node in graph.Node)
        {
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == original)
                {
                    node.Input[i] = unit;
                }
            }
        }

        ValueInfoProto input = graph.Input.Single(i => i.Name == original);
        graph.Input.Remove(input);
        graph.Input.Insert(0, TensorValueInfo(inputColumn, TensorProto.Types.DataType.Float, Batch, layout.InputValues));
        names.Add(inputColumn);

        int opset = (int)model.OpsetImport.Single(o => string.IsNullOrEmpty(o.Domain)).Version;
        var front = new List<NodeProto>();
        string current = inputColumn;
        if (layout.TakesLumaOfRgbPlanes)
        {
            string shape = names.Fresh("mlnet/rgb_planes_shape");
            graph.Initializer.Add(Int64Tensor(shape, [-1, 3, layout.PlaneSize]));
            string planes = names.Fresh("mlnet/rgb_planes");
            front.Add(Node("Reshape", [current, shape], planes));
            // Luma: each plane weighted (shape [1, 3, 1] broadcast over images and pixels), then the planes summed.
            string weights = names.Fresh("mlnet/luma_weights");
            graph.Initializer.Add(new TensorProto { Name = weights, DataType = (int)TensorProto.Types.DataType.Float, Dims = { 1, 3, 1 }, FloatData = { PixelInputLayout.LumaWeights } });
            string weighted = names.Fresh("mlnet/weighted_planes");
            front.Add(Node("Mul", [planes, weights], weighted));
            string gray = names.Fresh("mlnet/gray");
            if (opset >= 13)
            {
                string axes = names.Fresh("mlnet/plane_axis");
                graph.Initializer.Add(Int64Tensor(axes, [1]));
                front.Add(Node("ReduceSum", [weighted, axes], gray, IntAttribute("keepdims", 0)));
            }
            else
            {
                front.Add(Node("ReduceSum", [weighted], gray, IntsAttribute("axes", 1), IntAttribute("keepdims", 0)));
            }

            current = gray;
        }

        if (range == PixelRange.Byte)
        {
            string divisor = names.Fresh("mlnet/byte_range");
            graph.Initializer.Add(new TensorProto { Name = divisor, DataType = (int)TensorProto.Types.DataType.Float, FloatData = { 255f } });
            front.Add(Node("Div", [current, divisor], unit));
        }
        else if (front.Count == 0)
        {
            front.Add(Node("Identity", [current], unit));
        }
        else
        {
            front[^1].Output[0] = unit;
        }

        for (int i = 0; i < front.Count; i++)
        {
            graph.Node.Insert(i, front[i]);
        }

        // Labels: class names as a string constant, gathered at the arg-max of the scores.
        foreach (AdaptedTask task in tasks)
        {
            if (names.Contains(task.LabelOutput))
            {
                throw new InvalidOperationException($"The exported model already has a value named '{task.LabelOutput}'.");
            }

            string classes = names.Fresh($"mlnet/{task.Task}/class_names");
            var values = new AttributeProto { Name = "value_strings", Type = AttributeProto.Types.AttributeType.Strings };
            values.Strings.AddRange(task.ClassNames.Select(ByteString.CopyFromUtf8));
            graph.Node.Add(new NodeProto { OpType = "Constant", Name = classes, Output = { classes }, Attribute = { values } });
            string index = names.Fresh($"mlnet/{task.Task}/argmax");
            graph.Node.Add(Node("ArgMax", [task.ScoresOutput], index, IntAttribute("axis", 1), IntAttribute("keepdims", 0)));
            names.Add(task.LabelOutput);
            graph.Node.Add(Node("Gather", [classes, index], task.LabelOutput, IntAttribute("axis", 0)));
            graph.Output.Add(TensorValueInfo(task.LabelOutput, TensorProto.Types.DataType.String, Batch));
        }

        // ML.NET's OnnxTransformer types every initializer and knows no float16: float16 weights become Constant nodes.
        TensorProto[] halves = graph.Initializer.Where(i => i.DataType == (int)TensorProto.Types.DataType.Float16).ToArray();
        for (int i = 0; i < halves.Length; i++)
        {
            graph.Initializer.Remove(halves[i]);
            var value = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = halves[i] };
            graph.Node.Insert(i, new NodeProto { OpType = "Constant", Name = halves[i].Name, Output = { halves[i].Name }, Attribute = { value } });
        }

        var metadata = model.MetadataProps.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        metadata[VitOnnxModelInfo.InputKey] = inputColumn;
        metadata.Remove(VitOnnxModelInfo.FeaturesKey);
        metadata[InputRangeKey] = range == PixelRange.Byte ? "0-255" : "0-1";
        metadata[VitOnnxModelInfo.InputRangeKey] = metadata[InputRangeKey];
        metadata[InputLayoutKey] = string.Create(CultureInfo.InvariantCulture,
            $"{(layout.TakesLumaOfRgbPlanes ? 3 : layout.Channels)}x{layout.ImageSize}x{layout.ImageSize} channel-major{(layout.TakesLumaOfRgbPlanes ? ", luma of the RGB planes" : "")}");
        foreach (AdaptedTask task in tasks)
        {
            metadata[VitOnnxModelInfo.TaskKey(task.Task, "label_output")] = task.LabelOutput;
        }

        model.MetadataProps.Clear();
        foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        }

        return (model, tasks);
    }

    /// <summary>Writes <paramref name="model"/> through a temporary file renamed into place; returns the size in bytes.</summary>
    public static long Save(ModelProto model, string path) => OnnxGraphBuilder.Save(model, path);

    private static void Rename(GraphProto graph, string from, string to)
    {
        foreach (NodeProto node in graph.Node)
        {
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == from)
                {
                    node.Input[i] = to;
                }
            }

            for (int i = 0; i < node.Output.Count; i++)
            {
                if (node.Output[i] == from)
                {
                    node.Output[i] = to;
                }
            }
        }

        foreach (TensorProto initializer in graph.Initializer.Where(i => i.Name == from))
        {
            initializer.Name = to;
        }

        foreach (ValueInfoProto value in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo).Where(v => v.Name == from))
        {
            value.Name = to;
        }
    }

    private static NodeProto Node(string opType, string[] inputs, string output, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = output };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        node.Attribute.AddRange(attributes);
        return node;
    }

    private static AttributeProto IntAttribute(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static AttributeProto IntsAttribute(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    private static TensorProto Int64Tensor(string name, long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        return tensor;
    }

    private static ValueInfoProto TensorValueInfo(string name, TensorProto.Types.DataType type, string batch, params long[] dimensions)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = batch });
        foreach (long dimension in dimensions)
        {
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = dimension });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    /// <summary>Every value name of a graph (inputs, initializers, node outputs), handing out fresh ones.</summary>
    private sealed class NameSet
    {
        private readonly HashSet<string> _names = new(StringComparer.Ordinal);

        public NameSet(GraphProto graph)
        {
            foreach (ValueInfoProto input in graph.Input)
            {
                _names.Add(input.Name);
            }

            foreach (TensorProto initializer in graph.Initializer)
            {
                _names.Add(initializer.Name);
            }

            foreach (NodeProto node in graph.Node)
            {
                foreach (string output in node.Output)
                {
                    _names.Add(output);
                }
            }
        }

        public bool Contains(string name) => _names.Contains(name);

        public void Add(string name) => _names.Add(name);

        public string Fresh(string hint)
        {
            string name = hint;
            for (int i = 1; !_names.Add(name); i++)
            {
                name = string.Create(CultureInfo.InvariantCulture, $"{hint}_{i}");
            }

            return name;
        }
    }
}
