using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.ModelMerging.Onnx.Proto;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>
/// Builds one ONNX model (a single graph of the default <c>ai.onnx</c> domain) node by node and writes it.
/// <list type="bullet">
/// <item>Every value (graph input, initializer, node output) has a unique name. Names asked for exactly
/// (<see cref="AddInput"/>, <see cref="AddInitializer(string, Tensor, OnnxWeightPrecision)"/>, <see cref="AddOutput"/>) must
/// be free; names derived from a hint (node outputs, constants) get a numeric suffix when taken, and node outputs are
/// prefixed by the current <see cref="Scope"/> (<c>block3/attn/MatMul</c>), which keeps graphs readable in viewers.</item>
/// <item>Nodes are appended in the order they are added; an input must already be defined, so the graph is topologically
/// sorted by construction.</item>
/// <item>The bytes depend only on the calls made: no timestamps, random names or hash-order iteration, so the same
/// export twice gives the same file.</item>
/// </list>
/// The whole model must stay under protobuf's 2 GiB message limit (ML.NET's OnnxTransformer cannot carry external data
/// files); store big weights as float16 (<see cref="OnnxWeightPrecision.Float16"/>) to halve them.
/// </summary>
internal sealed class OnnxGraphBuilder
{
    /// <summary>Leave room for the graph structure when checking initializer bytes against the 2 GiB limit.</summary>
    private const long MaxInitializerBytes = int.MaxValue - (64L << 20);

    private readonly GraphProto _graph = new();
    private readonly HashSet<string> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _nextSuffix = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, string> _metadata = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, int> _domains = new(StringComparer.Ordinal);
    private readonly List<string> _scopes = [];

    /// <param name="graphName">Name of the graph (shown by viewers, not used by runtimes).</param>
    /// <param name="opset">Version of the default ONNX domain, <see cref="OnnxOpset.Minimum"/> to <see cref="OnnxOpset.Maximum"/>;
    /// the IR version follows from it (<see cref="OnnxOpset.IrVersionFor"/>).</param>
    public OnnxGraphBuilder(string graphName, int opset = OnnxOpset.Default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(graphName);
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("ONNX raw tensor data is little-endian; this builder copies memory as is and needs a little-endian machine.");
        }

        IrVersion = OnnxOpset.IrVersionFor(opset);
        Opset = opset;
        _graph.Name = graphName;
    }

    public string GraphName => _graph.Name;

    public int Opset { get; }

    public long IrVersion { get; }

    /// <summary>Written as <c>producer_name</c>.</summary>
    public string ProducerName { get; init; } = "Microsoft.ML.ModelMerging";

    /// <summary>Written as <c>producer_version</c>; defaults to this library's assembly version.</summary>
    public string ProducerVersion { get; init; } =
        typeof(OnnxGraphBuilder).Assembly.GetName().Version?.ToString() ?? "0.0.0.0";

    /// <summary>Markdown description of the model, written as the model's <c>doc_string</c>.</summary>
    public string? DocString { get; set; }

    /// <summary>Bytes of tensor data held by the initializers so far.</summary>
    public long InitializerBytes { get; private set; }

    public int NodeCount => _graph.Node.Count;

    public int InitializerCount => _graph.Initializer.Count;

    /// <summary>The <c>metadata_props</c> of the model, by key (written sorted by key).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Whether a value of this name (input, initializer or node output) exists.</summary>
    public bool HasValue(string name) => _values.Contains(name);

    /// <summary>
    /// Prefixes the names of node outputs created until the returned handle is disposed: <c>using (builder.Scope("block0"))</c>.
    /// Scopes nest (<c>block0/attn/...</c>).
    /// </summary>
    public IDisposable Scope(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        _scopes.Add(name);
        return new ScopeHandle(this, _scopes.Count);
    }

    /// <summary>Reserves and returns a fresh value name: the current scope's prefix plus <paramref name="hint"/>, suffixed <c>_1</c>, <c>_2</c>, ... if taken.</summary>
    public string UniqueName(string hint)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(hint);
        return Reserve(_scopes.Count == 0 ? hint : string.Join('/', _scopes) + "/" + hint);
    }

    /// <summary>Sets a <c>metadata_props</c> entry (replacing an earlier value of the key).</summary>
    public void SetMetadata(string key, string value)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(key);
        ArgumentNullException.ThrowIfNull(value);
        _metadata[key] = value;
    }

    /// <summary>Imports another operator domain (e.g. <c>com.microsoft</c>) so nodes can use it.</summary>
    public void ImportDomain(string domain, int version)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(domain);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(version);
        if (_domains.TryGetValue(domain, out int existing) && existing != version)
        {
            throw new ArgumentException($"Domain '{domain}' is already imported at version {existing}.", nameof(version));
        }

        _domains[domain] = version;
    }

    /// <summary>Declares a graph input named exactly <paramref name="name"/>; use <see cref="OnnxDimension.Batch"/> for a symbolic batch dimension.</summary>
    public string AddInput(string name, OnnxElementType type, params OnnxDimension[] shape)
    {
        ReserveExact(name);
        _graph.Input.Add(ValueInfo(name, type, shape));
        return name;
    }

    /// <summary>
    /// Declares <paramref name="value"/> as a graph output called <paramref name="name"/> (through an <c>Identity</c> node
    /// when the names differ).
    /// </summary>
    public string AddOutput(string value, string name, OnnxElementType type, params OnnxDimension[] shape)
    {
        RequireValue(value);
        if (!string.Equals(value, name, StringComparison.Ordinal))
        {
            ReserveExact(name);
            _graph.Node.Add(NodeProto("Identity", [value], [name], name, [], ""));
        }
        else if (_graph.Output.Any(o => o.Name == name))
        {
            throw new ArgumentException($"'{name}' is already a graph output.", nameof(name));
        }

        _graph.Output.Add(ValueInfo(name, type, shape));
        return name;
    }

    /// <summary>
    /// Adds a floating-point tensor as an initializer named exactly <paramref name="name"/> and returns the name of its
    /// float32 value: the initializer itself, or with <see cref="OnnxWeightPrecision.Float16"/> a float16 initializer followed
    /// by a <c>Cast</c> to float32 (named <c>&lt;name&gt;.float32</c>). Any device and floating dtype is accepted; the
    /// tensor is copied, not retained.
    /// </summary>
    /// <exception cref="ArgumentException">The tensor is not floating point, or a finite value overflows float16.</exception>
    public string AddInitializer(string name, Tensor tensor, OnnxWeightPrecision precision = OnnxWeightPrecision.Float32)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!tensor.is_floating_point())
        {
            throw new ArgumentException($"Initializer '{name}' has dtype {tensor.dtype}; expected a floating-point tensor.", nameof(tensor));
        }

        if (_values.Contains(name))
        {
            throw new ArgumentException($"The value name '{name}' is already used in graph '{GraphName}'.", nameof(name));
        }

        using var scope = NewDisposeScope();
        Tensor source = tensor.detach().cpu();
        if (precision == OnnxWeightPrecision.Float32)
        {
            Tensor stored = source.to(ScalarType.Float32).contiguous();
            return AddInitializer(name, OnnxElementType.Float, stored.shape, stored.bytes);
        }

        Tensor half = source.to(ScalarType.Float16).contiguous();
        long overflowed = (half.isinf() & source.isfinite()).sum().item<long>();
        if (overflowed > 0)
        {
            throw new ArgumentException(
                $"Initializer '{name}' has {overflowed} finite value(s) beyond float16's range (±65504); store it as float32.", nameof(tensor));
        }

        AddInitializer(name, OnnxElementType.Float16, half.shape, half.bytes);
        return Node("Cast", [name], [OnnxAttribute.Int("to", (long)OnnxElementType.Float)], name + ".float32", scoped: false);
    }

    /// <summary>Adds an initializer from bytes already in ONNX's raw layout (little-endian, row-major) under exactly <paramref name="name"/>.</summary>
    public string AddInitializer(string name, OnnxElementType type, ReadOnlySpan<long> shape, ReadOnlySpan<byte> rawData)
    {
        long count = 1;
        foreach (long d in shape)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(d, nameof(shape));
            count *= d;
        }

        long expected = count * ElementSize(type);
        if (rawData.Length != expected)
        {
            throw new ArgumentException($"Initializer '{name}' of {count} {type} element(s) needs {expected} bytes, got {rawData.Length}.", nameof(rawData));
        }

        if (InitializerBytes + rawData.Length > MaxInitializerBytes)
        {
            throw new InvalidOperationException(
                $"Adding initializer '{name}' takes the model past protobuf's 2 GiB limit ({InitializerBytes + rawData.Length:N0} bytes of weights). " +
                "Store weights as float16 or export fewer experts; ML.NET's OnnxTransformer cannot carry external data files.");
        }

        ReserveExact(name);
        var proto = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(rawData) };
        proto.Dims.AddRange(shape.ToArray());
        _graph.Initializer.Add(proto);
        InitializerBytes += rawData.Length;
        return name;
    }

    /// <summary>
    /// A float32 constant (an initializer) of the given shape (null: 1-D; empty: scalar). Identical constants are stored
    /// once and share a name derived from <paramref name="hint"/>.
    /// </summary>
    public string Constant(string hint, ReadOnlySpan<float> values, long[]? shape = null) =>
        Constant(hint, OnnxElementType.Float, MemoryMarshal.AsBytes(values), values.Length, shape,
            string.Join(',', values.ToArray().Select(v => BitConverter.SingleToInt32Bits(v).ToString(CultureInfo.InvariantCulture))));

    /// <summary>An int64 constant (shapes, axes, indices); see <see cref="Constant(string, ReadOnlySpan{float}, long[])"/>.</summary>
    public string Constant(string hint, ReadOnlySpan<long> values, long[]? shape = null) =>
        Constant(hint, OnnxElementType.Int64, MemoryMarshal.AsBytes(values), values.Length, shape,
            string.Join(',', values.ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture))));

    /// <summary>A float32 scalar constant.</summary>
    public string Scalar(string hint, float value) => Constant(hint, [value], []);

    private string Constant(string hint, OnnxElementType type, ReadOnlySpan<byte> bytes, int count, long[]? shape, string valuesKey)
    {
        shape ??= [count];
        string key = $"{(int)type}|{string.Join(',', shape)}|{valuesKey}";
        if (_constants.TryGetValue(key, out string? existing))
        {
            return existing;
        }

        string name = Reserve(hint);
        _values.Remove(name);
        AddInitializer(name, type, shape, bytes);
        _constants[key] = name;
        return name;
    }

    /// <summary>Appends a node with one output and returns the output's name (derived from <paramref name="name"/> or the op type).</summary>
    public string Node(string opType, IReadOnlyList<string> inputs, IReadOnlyList<OnnxAttribute>? attributes = null, string? name = null) =>
        Node(opType, inputs, attributes, name, scoped: true);

    /// <summary>Appends a node with several outputs (e.g. <c>Split</c>) and returns their names.</summary>
    public IReadOnlyList<string> Node(string opType, IReadOnlyList<string> inputs, int outputCount,
        IReadOnlyList<OnnxAttribute>? attributes = null, string? name = null, string domain = "")
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(outputCount);
        ArgumentException.ThrowIfNullOrWhiteSpace(opType);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(domain);
        if (domain.Length > 0 && !_domains.ContainsKey(domain))
        {
            throw new InvalidOperationException($"Node '{opType}' uses domain '{domain}', which is not imported (call ImportDomain first).");
        }

        foreach (string input in inputs)
        {
            if (input.Length > 0)
            {
                RequireValue(input);
            }
        }

        string first = UniqueName(name ?? opType);
        var outputs = new List<string> { first };
        for (int i = 1; i < outputCount; i++)
        {
            outputs.Add(Reserve($"{first}.{i.ToString(CultureInfo.InvariantCulture)}"));
        }

        _graph.Node.Add(NodeProto(opType, inputs, outputs, first, attributes ?? [], domain));
        return outputs;
    }

    private string Node(string opType, IReadOnlyList<string> inputs, IReadOnlyList<OnnxAttribute>? attributes, string? name, bool scoped)
    {
        if (scoped)
        {
            return Node(opType, inputs, 1, attributes, name)[0];
        }

        foreach (string input in inputs)
        {
            RequireValue(input);
        }

        string output = Reserve(name ?? opType);
        _graph.Node.Add(NodeProto(opType, inputs, [output], output, attributes ?? [], ""));
        return output;
    }

    /// <summary>The model as protobuf bytes.</summary>
    public byte[] ToByteArray() => ToModelProto().ToByteArray();

    /// <summary>Writes the model to <paramref name="stream"/> (left open).</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ToModelProto().WriteTo(stream);
    }

    /// <summary>
    /// Writes the model to <paramref name="path"/> through a temporary file in the same directory that is renamed into
    /// place when complete, so a failed export never leaves a partial model under the target name. Returns the size in bytes.
    /// </summary>
    public long Save(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return Save(ToModelProto(), path);
    }

    /// <summary>
    /// Whether <paramref name="path"/> holds a safetensors file (an 8-byte header length, then a JSON object): the model an
    /// export reads is never what it may overwrite.
    /// </summary>
    private static bool IsSafeTensors(string path)
    {
        if (!File.Exists(path)) return false;
        using var stream = File.OpenRead(path);
        Span<byte> start = stackalloc byte[9];
        if (stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false) < start.Length) return false;
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(start);
        return start[8] == (byte)'{' && headerLength >= 2 && headerLength < (ulong)stream.Length;
    }

    /// <summary>Writes any <paramref name="model"/> to <paramref name="path"/> as <see cref="Save(string)"/> does.</summary>
    internal static long Save(ModelProto model, string path)
    {
        string target = Path.GetFullPath(path);
        if (Directory.Exists(target))
            throw new ArgumentException($"{path} is a directory: name the .onnx file to write.");
        if (IsSafeTensors(target))
            throw new ArgumentException($"{path} is a safetensors checkpoint: exporting would replace it with an ONNX model; choose another output path.");
        // An existing file is replaced only when it is an .onnx file: pool.json, an index or a config.json named by mistake is kept.
        if (File.Exists(target) && !target.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"{path} exists and is not an .onnx file: exporting would replace it; choose another output path.");
        string directory = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(directory);
        string temporary = Path.Combine(directory, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.partial");
        try
        {
            long length;
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                model.WriteTo(stream);
                stream.Flush(flushToDisk: true);
                length = stream.Length;
            }

            File.Move(temporary, target, overwrite: true);
            return length;
        }
        finally
        {
            if (File.Exists(temporary))
            {
                File.Delete(temporary);
            }
        }
    }

    internal ModelProto ToModelProto()
    {
        if (_graph.Output.Count == 0)
        {
            throw new InvalidOperationException($"Graph '{GraphName}' has no outputs.");
        }

        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = ProducerName,
            ProducerVersion = ProducerVersion,
            Graph = _graph,
        };
        if (DocString is not null)
        {
            model.DocString = DocString;
        }

        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        foreach (var (domain, version) in _domains)
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        }

        foreach (var (key, value) in _metadata)
        {
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        }

        return model;
    }

    private static NodeProto NodeProto(string opType, IReadOnlyList<string> inputs, IReadOnlyList<string> outputs, string name,
        IReadOnlyList<OnnxAttribute> attributes, string domain)
    {
        var node = new NodeProto { OpType = opType, Name = name };
        if (domain.Length > 0)
        {
            node.Domain = domain;
        }

        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (OnnxAttribute attribute in attributes)
        {
            if (!seen.Add(attribute.Name))
            {
                throw new ArgumentException($"Node '{name}' ({opType}) has attribute '{attribute.Name}' twice.", nameof(attributes));
            }

            node.Attribute.Add(attribute.ToProto());
        }

        return node;
    }

    private static ValueInfoProto ValueInfo(string name, OnnxElementType type, OnnxDimension[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var tensorShape = new TensorShapeProto();
        foreach (OnnxDimension dimension in shape)
        {
            tensorShape.Dim.Add(dimension.Symbol is { } symbol
                ? new TensorShapeProto.Types.Dimension { DimParam = symbol }
                : new TensorShapeProto.Types.Dimension { DimValue = dimension.Size!.Value });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = tensorShape } },
        };
    }

    private static long ElementSize(OnnxElementType type) => type switch
    {
        OnnxElementType.Float or OnnxElementType.Int32 => 4,
        OnnxElementType.Int64 or OnnxElementType.Double => 8,
        OnnxElementType.Float16 or OnnxElementType.BFloat16 => 2,
        OnnxElementType.UInt8 or OnnxElementType.Int8 or OnnxElementType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown ONNX element type."),
    };

    private void RequireValue(string name)
    {
        if (!_values.Contains(name))
        {
            throw new ArgumentException($"Value '{name}' is not defined in graph '{GraphName}' (add the input, initializer or node producing it first).");
        }
    }

    private void ReserveExact(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!_values.Add(name))
        {
            throw new ArgumentException($"The value name '{name}' is already used in graph '{GraphName}'.", nameof(name));
        }
    }

    private string Reserve(string hint)
    {
        if (_values.Add(hint))
        {
            return hint;
        }

        int suffix = _nextSuffix.GetValueOrDefault(hint, 1);
        string candidate;
        do
        {
            candidate = hint + "_" + suffix.ToString(CultureInfo.InvariantCulture);
            suffix++;
        }
        while (!_values.Add(candidate));
        _nextSuffix[hint] = suffix;
        return candidate;
    }

    private sealed class ScopeHandle(OnnxGraphBuilder builder, int depth) : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            if (builder._scopes.Count != depth)
            {
                throw new InvalidOperationException("Scopes of an OnnxGraphBuilder must be closed in reverse order of opening.");
            }

            builder._scopes.RemoveAt(depth - 1);
        }
    }
}
