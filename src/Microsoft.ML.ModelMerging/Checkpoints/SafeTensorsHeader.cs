using System.Buffers.Binary;
using System.Text.Json;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// The parsed and validated header of one safetensors file: an 8-byte little-endian length, a JSON object
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}</c>, then the data section.
/// Validation is strict so that every later read can trust offsets and sizes.
/// </summary>
internal sealed class SafeTensorsHeader
{
    /// <summary>Headers larger than this are rejected before any allocation (the reference implementation uses the same cap).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public string FilePath { get; }
    /// <summary>Absolute file offset where the data section begins (8 + header length).</summary>
    public long DataStart { get; }
    public long DataLength { get; }
    /// <summary>Tensors sorted by name (ordinal).</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsHeader(string filePath, long dataStart, long dataLength, List<TensorEntry> tensors, Dictionary<string, string> metadata)
    {
        FilePath = filePath;
        DataStart = dataStart;
        DataLength = dataLength;
        Tensors = tensors;
        Metadata = metadata;
    }

    public static SafeTensorsHeader Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        return Read(stream, path);
    }

    public static SafeTensorsHeader Read(Stream stream, string path)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw new CheckpointFormatException(path, null, $"file is {fileLength} bytes, shorter than the 8-byte header length prefix.");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointFormatException(path, null, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit.");
        if ((long)headerLength > fileLength - 8)
            throw new CheckpointFormatException(path, null, $"header length {headerLength} runs past the end of the file ({fileLength} bytes).");
        var json = new byte[headerLength];
        stream.ReadExactly(json);
        return Parse(path, json, 8 + (long)headerLength, fileLength - 8 - (long)headerLength);
    }

    internal static SafeTensorsHeader Parse(string path, byte[] json, long dataStart, long dataLength)
    {
        // System.Text.Json checks UTF-8 only when a string is decoded, and then throws InvalidOperationException:
        // validate the whole header first so every malformed file fails the same documented way.
        if (!System.Text.Unicode.Utf8.IsValid(json))
            throw new CheckpointFormatException(path, null, "header is not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, null, $"header is not valid JSON: {e.Message}");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, null, "header must be a JSON object.");
            var tensors = new List<TensorEntry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in document.RootElement.EnumerateObject())
            {
                string name = JsonText.Name(property, path, null);
                if (!seen.Add(name))
                    throw new CheckpointFormatException(path, name, "appears twice in the header.");
                if (name == "__metadata__")
                    ReadMetadata(path, property.Value, metadata);
                else
                    tensors.Add(ReadEntry(path, name, property.Value));
            }
            CheckLayout(path, tensors, dataLength);
            tensors.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
            return new SafeTensorsHeader(path, dataStart, dataLength, tensors, metadata);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, null, "__metadata__ must be an object of string values.");
        foreach (var item in value.EnumerateObject())
        {
            string key = JsonText.Name(item, path, null);
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, null, $"__metadata__ entry '{key}' must be a string.");
            if (!metadata.TryAdd(key, JsonText.String(item.Value, path, null, $"__metadata__ entry '{key}'")))
                throw new CheckpointFormatException(path, null, $"__metadata__ entry '{key}' appears twice.");
        }
    }

    private static readonly string[] EntryFields = ["dtype", "shape", "data_offsets"];

    private static TensorEntry ReadEntry(string path, string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, name, "header entry must be an object with dtype, shape and data_offsets.");
        // Strict like the safetensors crate: a field given twice is ambiguous; an unknown one is a misspelling or another format.
        var fields = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var field in value.EnumerateObject())
        {
            string fieldName = JsonText.Name(field, path, name);
            if (!EntryFields.Contains(fieldName, StringComparer.Ordinal))
                throw new CheckpointFormatException(path, name, $"unknown field '{fieldName}' (expected dtype, shape and data_offsets).");
            if (!fields.TryAdd(fieldName, field.Value))
                throw new CheckpointFormatException(path, name, $"field '{fieldName}' appears twice.");
        }
        if (!fields.TryGetValue("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, name, "missing string field 'dtype'.");
        string dtypeText = JsonText.String(dtypeElement, path, name, "dtype");
        if (!SafeTensorsDTypes.TryParseHeaderName(dtypeText, out var dtype))
            throw new CheckpointFormatException(path, name, $"unknown dtype '{dtypeText}' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).");
        if (!fields.TryGetValue("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, name, "missing array field 'shape'.");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (!JsonText.TryNonNegativeInteger(d, out long dim))
                throw new CheckpointFormatException(path, name, $"shape entry {i} must be a non-negative integer below 2^63.");
            shape[i++] = dim;
        }
        long expectedBytes = ByteCount(path, name, shape, dtype);
        if (!fields.TryGetValue("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array ||
            offsetsElement.GetArrayLength() != 2)
            throw new CheckpointFormatException(path, name, "missing field 'data_offsets' = [begin, end].");
        long begin = ReadOffset(path, name, offsetsElement[0]);
        long end = ReadOffset(path, name, offsetsElement[1]);
        if (end < begin)
            throw new CheckpointFormatException(path, name, $"data_offsets [{begin}, {end}] end before they begin.");
        if (end - begin != expectedBytes)
            throw new CheckpointFormatException(path, name,
                $"data_offsets [{begin}, {end}] hold {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtype.ToHeaderName()} needs {expectedBytes}.");
        return new TensorEntry(name, dtype, shape, begin, end - begin) { File = path };
    }

    /// <summary>
    /// The tensor's byte count. The product of the non-zero dimensions times the element size must fit in 63 bits even
    /// when a zero dimension makes the tensor empty: libtorch computes strides from those dimensions and aborts the
    /// process when they overflow.
    /// </summary>
    private static long ByteCount(string path, string name, long[] shape, SafeTensorsDType dtype)
    {
        long nonZero = dtype.ElementSize();
        bool empty = false;
        foreach (long dim in shape)
        {
            if (dim == 0)
            {
                empty = true;
                continue;
            }
            if (nonZero > long.MaxValue / dim)
                throw new CheckpointFormatException(path, name,
                    $"shape [{string.Join(", ", shape)}] of {dtype.ToHeaderName()}: byte count overflows 64 bits (zero dimensions aside, as libtorch counts).");
            nonZero *= dim;
        }
        return empty ? 0 : nonZero;
    }

    private static long ReadOffset(string path, string name, JsonElement e)
    {
        if (!JsonText.TryNonNegativeInteger(e, out long v))
            throw new CheckpointFormatException(path, name, "data_offsets must be non-negative integers below 2^63.");
        return v;
    }

    /// <summary>The data section must be covered exactly once: no overlap, no gap, nothing past the end.</summary>
    private static void CheckLayout(string path, List<TensorEntry> tensors, long dataLength)
    {
        var byOffset = tensors.OrderBy(t => t.Offset).ThenBy(t => t.ByteLength).ToList();
        long cursor = 0;
        TensorEntry? previous = null;
        foreach (var t in byOffset)
        {
            if (t.Offset + t.ByteLength > dataLength)
                throw new CheckpointFormatException(path, t.Name,
                    $"data_offsets [{t.Offset}, {t.Offset + t.ByteLength}] run past the end of the data section ({dataLength} bytes).");
            if (t.Offset < cursor)
                throw new CheckpointFormatException(path, t.Name, $"data_offsets [{t.Offset}, {t.Offset + t.ByteLength}] overlap tensor '{previous!.Name}'.");
            if (t.Offset > cursor)
                throw new CheckpointFormatException(path, t.Name,
                    $"data_offsets begin at {t.Offset} leaving a gap of {t.Offset - cursor} bytes after {(previous is null ? "the header" : $"tensor '{previous.Name}'")}.");
            cursor = t.Offset + t.ByteLength;
            previous = t;
        }
        if (cursor != dataLength)
            throw new CheckpointFormatException(path, null, $"data section is {dataLength} bytes but the tensors cover {cursor}: {dataLength - cursor} trailing bytes.");
    }

    /// <summary>Serialises a header for the given tensors (in the given order, contiguous) and metadata, padded with spaces to 8 bytes.</summary>
    internal static byte[] Serialize(IReadOnlyList<TensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                writer.WriteStartObject(t.Name);
                writer.WriteString("dtype", t.DType.ToHeaderName());
                writer.WriteStartArray("shape");
                foreach (long d in t.Shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + t.ByteLength);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += t.ByteLength;
            }
            writer.WriteEndObject();
        }
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
