using System.Buffers.Binary;
using System.Text.Json;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// The parsed and validated header of one safetensors file: an 8-byte little-endian length, a JSON object
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}</c>, then the data section.
/// Validation is strict so that every later read can trust offsets and sizes.
/// </summary>
public sealed class SafeTensorsHeader
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
                if (!seen.Add(property.Name))
                    throw new CheckpointFormatException(path, property.Name, "appears twice in the header.");
                if (property.Name == "__metadata__")
                    ReadMetadata(path, property.Value, metadata);
                else
                    tensors.Add(ReadEntry(path, property.Name, property.Value));
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
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, null, $"__metadata__ entry '{item.Name}' must be a string.");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static TensorEntry ReadEntry(string path, string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, name, "header entry must be an object with dtype, shape and data_offsets.");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, name, "missing string field 'dtype'.");
        string dtypeText = dtypeElement.GetString()!;
        if (!SafeTensorsDTypes.TryParseHeaderName(dtypeText, out var dtype))
            throw new CheckpointFormatException(path, name, $"unknown dtype '{dtypeText}' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, name, "missing array field 'shape'.");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        long elements = 1;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new CheckpointFormatException(path, name, $"shape entry {i} must be a non-negative integer.");
            shape[i++] = dim;
            try
            {
                elements = checked(elements * dim);
            }
            catch (OverflowException)
            {
                throw new CheckpointFormatException(path, name, $"shape [{string.Join(", ", shape.Take(i))}...] has an element count that overflows 64 bits.");
            }
        }
        long expectedBytes;
        try
        {
            expectedBytes = checked(elements * dtype.ElementSize());
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, name, $"shape [{string.Join(", ", shape)}] × {dtype.ElementSize()} bytes overflows 64 bits.");
        }
        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array ||
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

    private static long ReadOffset(string path, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long v) || v < 0)
            throw new CheckpointFormatException(path, name, "data_offsets must be non-negative integers.");
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
