using System.Text.Json;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// A checkpoint read tensor by tensor: a single <c>.safetensors</c> file, a sharded checkpoint given by its
/// <c>model.safetensors.index.json</c>, or a directory holding either. Only headers are held in memory; tensor data is read on demand.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    /// <summary>The Hugging Face index file name of a sharded checkpoint, <c>model.safetensors.index.json</c>.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafeTensorsFile> _files;
    private readonly Dictionary<string, (TensorEntry Entry, SafeTensorsFile File)> _byName;
    private readonly ComputedTensors? _computed;

    /// <summary>What the user pointed at (file, index or directory), for messages.</summary>
    public string Source { get; }
    /// <summary>Every tensor of every shard, sorted by name.</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }
    /// <summary>Metadata of the single file, or of the first shard merged with the index's <c>metadata</c> for sharded checkpoints.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Full paths of the files the checkpoint reads (the shards, or the single file).</summary>
    public IReadOnlyList<string> Files => _files.Keys.ToList();

    private Checkpoint(string source, Dictionary<string, SafeTensorsFile> files, Dictionary<string, string> metadata)
    {
        Source = source;
        _files = files;
        Metadata = metadata;
        _byName = new Dictionary<string, (TensorEntry, SafeTensorsFile)>(StringComparer.Ordinal);
        foreach (var file in files.Values)
        {
            foreach (var entry in file.Tensors)
            {
                if (_byName.TryGetValue(entry.Name, out var other))
                    throw new CheckpointFormatException(file.FilePath, entry.Name, $"also stored in shard {other.File.FilePath}.");
                _byName[entry.Name] = (entry, file);
            }
        }
        Tensors = _byName.Values.Select(v => v.Entry).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
    }

    private Checkpoint(string source, Dictionary<string, SafeTensorsFile> files, ComputedTensors computed)
    {
        Source = source;
        _files = files;
        _computed = computed;
        Metadata = computed.Underlying.Metadata;
        _byName = new Dictionary<string, (TensorEntry, SafeTensorsFile)>(StringComparer.Ordinal);
        Tensors = computed.Underlying.Tensors.Select(e => computed.Entries.GetValueOrDefault(e.Name) ?? e).ToList();
    }

    /// <summary>
    /// A checkpoint that reads as <paramref name="underlying"/> except for the tensors named in <paramref name="computed"/>,
    /// whose float32 values <paramref name="compute"/> makes when they are first read (e.g. W0 + ΔW of a LoRA adapter).
    /// Only the last few computed tensors are kept (any thread may read), so memory stays bounded by a few tensors.
    /// <paramref name="files"/> are the files the values come from besides the underlying checkpoint (opened here, for
    /// <see cref="Files"/>); <paramref name="owned"/> is disposed with the checkpoint; the underlying one is not.
    /// </summary>
    public static Checkpoint Derived(string source, Checkpoint underlying, IEnumerable<string> files, IReadOnlyCollection<string> computed,
        Func<string, float[]> compute, IDisposable? owned = null)
    {
        ArgumentNullException.ThrowIfNull(underlying);
        ArgumentNullException.ThrowIfNull(compute);
        var entries = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        foreach (string name in computed)
        {
            var entry = underlying.GetEntry(name);
            entries[name] = new TensorEntry(name, SafeTensorsDType.F32, entry.Shape, 0, entry.ElementCount * sizeof(float)) { File = source };
        }
        var opened = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (string file in files) opened[file] = SafeTensorsFile.Open(file);
        }
        catch
        {
            foreach (var f in opened.Values) f.Dispose();
            throw;
        }
        return new Checkpoint(source, opened, new ComputedTensors(underlying, entries, compute, owned));
    }

    /// <summary>
    /// Opens a checkpoint for reading tensor by tensor: a <c>.safetensors</c> file, a <c>model.safetensors.index.json</c> of a
    /// sharded checkpoint, or a directory holding one (its index, else <c>model.safetensors</c>, else its only <c>.safetensors</c>
    /// file). Only headers are read here.
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing exists at <paramref name="path"/>, or the directory holds no checkpoint.</exception>
    /// <exception cref="ArgumentException">The directory holds several <c>.safetensors</c> files and neither an index nor <c>model.safetensors</c>.</exception>
    /// <exception cref="CheckpointFormatException">A header or the index is malformed, or shards of different writes are mixed.</exception>
    public static Checkpoint Open(string path)
    {
        if (Directory.Exists(path)) return Open(ResolveDirectory(path));
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint not found: {path}", path);
        if (path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new CheckpointFormatException(path, null, "this is an ONNX model; a checkpoint is a .safetensors file (or a Hugging Face model folder): score ONNX models with ONNX Runtime or ML.NET.");
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(path);
        var file = SafeTensorsFile.Open(path);
        return new Checkpoint(path, new Dictionary<string, SafeTensorsFile> { [path] = file },
            new Dictionary<string, string>(file.Metadata, StringComparer.Ordinal));
    }

    /// <summary>A directory resolves to its index file, else to its only .safetensors file.</summary>
    private static string ResolveDirectory(string directory)
    {
        string index = Path.Combine(directory, IndexFileName);
        if (File.Exists(index)) return index;
        var candidates = Directory.GetFiles(directory, "*.safetensors").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        string preferred = Path.Combine(directory, "model.safetensors");
        if (File.Exists(preferred)) return preferred;
        return candidates.Length switch
        {
            1 => candidates[0],
            0 => throw new FileNotFoundException($"{directory}: no {IndexFileName} and no .safetensors file.", directory),
            _ => throw new ArgumentException(
                $"{directory}: {candidates.Length} .safetensors files and no {IndexFileName}; name the file to read."),
        };
    }

    private static Checkpoint OpenIndex(string indexPath)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        byte[] bytes = File.ReadAllBytes(indexPath);
        // As for headers: System.Text.Json checks UTF-8 and surrogates only when a string is decoded.
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
            throw new CheckpointFormatException(indexPath, null, "index is not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, null, $"index is not valid JSON: {e.Message}");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object ||
                !document.RootElement.TryGetProperty("weight_map", out var weightMap) || weightMap.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(indexPath, null, "index must be an object with a 'weight_map' object.");
            var expected = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var item in weightMap.EnumerateObject())
            {
                string tensor = JsonText.Name(item, indexPath, null);
                if (item.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointFormatException(indexPath, tensor, "weight_map values must be shard file names.");
                string shard = JsonText.String(item.Value, indexPath, tensor, "the shard name");
                if (shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                    throw new CheckpointFormatException(indexPath, item.Name, $"shard name '{shard}' must be a file name in the index's folder.");
                if (!expected.TryAdd(tensor, shard))
                    throw new CheckpointFormatException(indexPath, tensor, "appears twice in weight_map.");
            }
            var files = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            try
            {
                foreach (string shard in expected.Values.Distinct().OrderBy(s => s, StringComparer.Ordinal))
                {
                    string shardPath = Path.Combine(directory, shard);
                    if (!File.Exists(shardPath))
                        throw new CheckpointFormatException(indexPath, null, $"shard '{shard}' listed in weight_map does not exist.");
                    files[shardPath] = SafeTensorsFile.Open(shardPath);
                }
                foreach (var (name, shard) in expected)
                {
                    var file = files[Path.Combine(directory, shard)];
                    if (!file.Contains(name))
                        throw new CheckpointFormatException(file.FilePath, name, $"listed in {Path.GetFileName(indexPath)} but missing from this shard.");
                }
                CheckShardSet(indexPath, document.RootElement, files.Values);
                foreach (var file in files.Values)
                foreach (var entry in file.Tensors)
                    if (!expected.TryGetValue(entry.Name, out var shard) || Path.Combine(directory, shard) != file.FilePath)
                        throw new CheckpointFormatException(file.FilePath, entry.Name, $"stored in this shard but not mapped to it by {Path.GetFileName(indexPath)}.");
            }
            catch
            {
                foreach (var f in files.Values) f.Dispose();
                throw;
            }
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            if (files.Count > 0)
                foreach (var (k, v) in files.Values.First().Metadata) metadata[k] = v;
            if (document.RootElement.TryGetProperty("metadata", out var indexMetadata) && indexMetadata.ValueKind == JsonValueKind.Object)
                foreach (var item in indexMetadata.EnumerateObject())
                {
                    string key = JsonText.Name(item, indexPath, null);
                    metadata[key] = item.Value.ValueKind == JsonValueKind.String
                        ? JsonText.String(item.Value, indexPath, null, $"metadata entry '{key}'") : item.Value.GetRawText();
                }
            return new Checkpoint(indexPath, files, metadata);
        }
    }

    /// <summary>
    /// Every shard must come from the same write as its index (<see cref="CheckpointWriter.ShardSetMetadataKey"/>): a
    /// shard left by an older or interrupted write under a name the index lists is refused, not silently mixed in.
    /// Checkpoints written elsewhere carry the key in neither place and pass.
    /// </summary>
    private static void CheckShardSet(string indexPath, JsonElement index, IEnumerable<SafeTensorsFile> shards)
    {
        string? expected = index.TryGetProperty("metadata", out var m) && m.ValueKind == JsonValueKind.Object &&
            m.TryGetProperty(CheckpointWriter.ShardSetMetadataKey, out var v) && v.ValueKind == JsonValueKind.String
                ? JsonText.String(v, indexPath, null, CheckpointWriter.ShardSetMetadataKey) : null;
        foreach (var shard in shards)
        {
            string? actual = shard.Metadata.TryGetValue(CheckpointWriter.ShardSetMetadataKey, out var a) ? a : null;
            if (!string.Equals(expected, actual, StringComparison.Ordinal))
                throw new CheckpointFormatException(shard.FilePath, null,
                    $"shard belongs to write '{actual ?? "(none)"}' but {Path.GetFileName(indexPath)} to write '{expected ?? "(none)"}': " +
                    "the shards of different writes are mixed (an interrupted or concurrent write?).");
        }
    }

    /// <summary>True when the checkpoint holds a tensor of that name.</summary>
    public bool Contains(string name) => _computed is { } c ? c.Underlying.Contains(name) : _byName.ContainsKey(name);

    /// <summary>The header entry of a tensor (dtype, shape, file, offsets).</summary>
    /// <exception cref="CheckpointFormatException">No such tensor.</exception>
    public TensorEntry GetEntry(string name) =>
        _computed is { } c ? c.Entries.GetValueOrDefault(name) ?? c.Underlying.GetEntry(name)
        : _byName.TryGetValue(name, out var v) ? v.Entry : throw new CheckpointFormatException(Source, name, "no such tensor in this checkpoint.");

    /// <summary>Reads one tensor (float types as float32 by default). The caller owns the returned tensor.</summary>
    public torch.Tensor ReadTensor(string name, bool asFloat32 = true)
    {
        if (_computed is { } c)
            return c.Entries.TryGetValue(name, out var entry) ? torch.tensor(c.Values(name), entry.Shape) : c.Underlying.ReadTensor(name, asFloat32);
        return _byName.TryGetValue(name, out var v) ? v.File.ReadTensor(name, asFloat32)
            : throw new CheckpointFormatException(Source, name, "no such tensor in this checkpoint.");
    }

    /// <summary>The tensor's bytes in their stored form (little-endian, stored dtype).</summary>
    /// <exception cref="CheckpointFormatException">No such tensor.</exception>
    public byte[] ReadBytes(string name)
    {
        if (_computed is { } c)
            return c.Entries.ContainsKey(name) ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(c.Values(name).AsSpan()).ToArray() : c.Underlying.ReadBytes(name);
        return _byName.TryGetValue(name, out var v) ? v.File.ReadBytes(name)
            : throw new CheckpointFormatException(Source, name, "no such tensor in this checkpoint.");
    }

    /// <summary>Reads stored bytes of a tensor into a caller's buffer; see <see cref="SafeTensorsFile.ReadBytes(string, long, Span{byte})"/>.</summary>
    public void ReadBytes(string name, long offsetInTensor, Span<byte> destination)
    {
        if (_computed is { } c)
        {
            if (!c.Entries.ContainsKey(name))
            {
                c.Underlying.ReadBytes(name, offsetInTensor, destination);
                return;
            }
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(c.Values(name).AsSpan());
            if (offsetInTensor < 0 || offsetInTensor + destination.Length > bytes.Length)
                throw new ArgumentOutOfRangeException(nameof(offsetInTensor), $"Bytes [{offsetInTensor}, {offsetInTensor + destination.Length}) of tensor '{name}' are outside its {bytes.Length} bytes.");
            bytes.Slice((int)offsetInTensor, destination.Length).CopyTo(destination);
            return;
        }
        if (!_byName.TryGetValue(name, out var v)) throw new CheckpointFormatException(Source, name, "no such tensor in this checkpoint.");
        v.File.ReadBytes(name, offsetInTensor, destination);
    }

    /// <summary>Loads every tensor (for models that fit in memory, such as the zoo).</summary>
    public Dictionary<string, torch.Tensor> ReadAll(bool asFloat32 = true)
    {
        var all = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        foreach (var entry in Tensors) all[entry.Name] = ReadTensor(entry.Name, asFloat32);
        return all;
    }

    /// <summary>Total number of elements over all tensors.</summary>
    public long ParameterCount => Tensors.Sum(t => t.ElementCount);
    /// <summary>Total data size in bytes over all tensors, in their stored dtypes.</summary>
    public long ByteCount => Tensors.Sum(t => t.ByteLength);

    /// <summary>Closes every file the checkpoint opened.</summary>
    public void Dispose()
    {
        foreach (var f in _files.Values) f.Dispose();
        _computed?.Owned?.Dispose();
    }

    /// <summary>The computed tensors of a <see cref="Derived"/> checkpoint, the last few kept (thread-safe).</summary>
    private sealed class ComputedTensors(Checkpoint underlying, Dictionary<string, TensorEntry> entries, Func<string, float[]> compute, IDisposable? owned)
    {
        private const int Capacity = 4;
        private readonly LinkedList<(string Name, Lazy<float[]> Values)> _recent = new();

        public Checkpoint Underlying { get; } = underlying;
        public Dictionary<string, TensorEntry> Entries { get; } = entries;
        public IDisposable? Owned { get; } = owned;

        public float[] Values(string name)
        {
            Lazy<float[]> values;
            lock (_recent)
            {
                var node = _recent.First;
                while (node is not null && node.Value.Name != name) node = node.Next;
                if (node is not null)
                {
                    _recent.Remove(node);
                }
                else
                {
                    node = new LinkedListNode<(string, Lazy<float[]>)>((name, new Lazy<float[]>(() => compute(name), LazyThreadSafetyMode.ExecutionAndPublication)));
                    if (_recent.Count >= Capacity) _recent.RemoveLast();
                }
                _recent.AddFirst(node);
                values = node.Value.Values;
            }
            return values.Value;
        }
    }
}
