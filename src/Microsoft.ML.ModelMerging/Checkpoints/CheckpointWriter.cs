using System.Globalization;
using System.Text.Json;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Streams a planned set of tensors into a checkpoint: one <c>.safetensors</c> file, or shards no larger than a size limit
/// plus a Hugging Face style <c>model.safetensors.index.json</c>. Nothing appears under a final name until every shard is
/// complete; a failure or an abandoned write deletes the temporary files.
/// </summary>
public sealed class CheckpointWriter : IDisposable
{
    private readonly List<(SafeTensorsWriter? Writer, List<TensorSpec> Specs, string Path)> _shards = new();
    private readonly IReadOnlyDictionary<string, string>? _metadata;
    private readonly string? _indexPath;
    private readonly string _directory;
    private readonly string? _createdRoot;
    private readonly bool _sharded;
    private string? _indexTemporary;
    private int _current;
    private bool _completed;

    /// <summary>The path a reader should open: the single file, or the index of a sharded checkpoint.</summary>
    public string OutputPath { get; }
    /// <summary>Full paths of the data files being written: the single file, or every shard.</summary>
    public IReadOnlyList<string> ShardPaths => _shards.Select(s => s.Path).ToList();

    /// <summary>
    /// Metadata key tying the shards of one write to its index: each shard and the index carry the same random value, and
    /// <see cref="Checkpoint"/> refuses a shard whose value differs from its index's.
    /// </summary>
    public const string ShardSetMetadataKey = "mlmerge.shard_set";

    /// <summary>Starts a write: temporary files are created now and renamed into place by <see cref="Complete"/>.</summary>
    /// <param name="path">A <c>.safetensors</c> file path, or a directory (then <c>model.safetensors</c> or shards go inside).</param>
    /// <param name="plan">Every tensor to write (name, dtype, shape), in the order the <c>Write</c> calls will give them.</param>
    /// <param name="metadata">The <c>__metadata__</c> of every file written (string to string).</param>
    /// <param name="maxShardBytes">Split into shards of at most this many data bytes (a single larger tensor gets a shard of its own); null = one file.</param>
    public CheckpointWriter(string path, IReadOnlyList<TensorSpec> plan, IReadOnlyDictionary<string, string>? metadata = null, long? maxShardBytes = null)
    {
        if (maxShardBytes is <= 0) throw new ArgumentException($"Shard size must be positive, got {maxShardBytes}.");
        bool toFile = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
        _directory = toFile ? Path.GetDirectoryName(Path.GetFullPath(path))! : Path.GetFullPath(path);
        // Folders this write creates are removed again if it does not complete.
        _createdRoot = TemporaryFiles.TopmostMissing(_directory);
        string stem = toFile ? Path.GetFileNameWithoutExtension(path) : "model";
        var groups = SplitIntoShards(plan, maxShardBytes);
        if (groups.Count <= 1)
        {
            _metadata = metadata;
            string file = toFile ? Path.GetFullPath(path) : Path.Combine(_directory, "model.safetensors");
            _shards.Add((null, groups.Count == 0 ? new List<TensorSpec>() : groups[0], file));
            OutputPath = file;
            // Only a directory output replaces an older sharded checkpoint (its index would hide model.safetensors).
            _indexPath = toFile ? null : Path.Combine(_directory, Checkpoint.IndexFileName);
            _sharded = false;
        }
        else
        {
            // New shards get names no earlier write used, so the old index and its shards stay whole until the new index
            // replaces it in one rename: a failure at any point leaves either the old checkpoint or the new one.
            string set = Guid.NewGuid().ToString("N")[..12];
            _metadata = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal)
            {
                [ShardSetMetadataKey] = set,
            };
            for (int i = 0; i < groups.Count; i++)
                _shards.Add((null, groups[i], Path.Combine(_directory, $"{stem}-{i + 1:D5}-of-{groups.Count:D5}-{set}.safetensors")));
            _indexPath = Path.Combine(_directory, toFile ? $"{stem}.safetensors.index.json" : Checkpoint.IndexFileName);
            OutputPath = _indexPath;
            _sharded = true;
            TemporaryFiles.RemoveStale(_directory, stem + "-");
            TemporaryFiles.RemoveStale(_directory, Path.GetFileName(_indexPath) + ".");
        }
        Open(0);
    }

    private static List<List<TensorSpec>> SplitIntoShards(IReadOnlyList<TensorSpec> plan, long? maxShardBytes)
    {
        var groups = new List<List<TensorSpec>>();
        var current = new List<TensorSpec>();
        long size = 0;
        foreach (var spec in plan)
        {
            if (maxShardBytes is long max && current.Count > 0 && size + spec.ByteLength > max)
            {
                groups.Add(current);
                current = new List<TensorSpec>();
                size = 0;
            }
            current.Add(spec);
            size += spec.ByteLength;
        }
        if (current.Count > 0 || groups.Count == 0) groups.Add(current);
        return groups;
    }

    private void Open(int index)
    {
        var (_, specs, path) = _shards[index];
        var metadata = new Dictionary<string, string>(_metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        _shards[index] = (new SafeTensorsWriter(path, specs, metadata), specs, path);
        _current = index;
    }

    private SafeTensorsWriter Current()
    {
        var writer = _shards[_current].Writer!;
        // Move to the next shard once the current one holds everything planned for it.
        while (writer.Next is null && _current + 1 < _shards.Count)
        {
            writer.Finish();
            Open(_current + 1);
            writer = _shards[_current].Writer!;
        }
        return writer;
    }

    /// <summary>The next planned tensor name, or null when everything has been written.</summary>
    public TensorSpec? Next => Current().Next;

    /// <summary>Writes the next planned tensor, converting it to the planned dtype (e.g. float32 math stored as bf16).</summary>
    public void Write(torch.Tensor tensor) => Current().Write(tensor);
    /// <summary>Writes the next planned tensor from bytes already in its stored form.</summary>
    public void WriteBytes(ReadOnlySpan<byte> bytes) => Current().WriteBytes(bytes);
    /// <summary>Writes the next planned floating-point tensor from float32 values given in consecutive pieces, stored as <see cref="Write"/> would store them.</summary>
    public void WriteFloats(IReadOnlyList<ReadOnlyMemory<float>> parts) => Current().WriteFloats(parts);

    /// <summary>
    /// Overwrites single entries of a tensor already written (before <see cref="Complete"/>): <paramref name="values"/>
    /// are converted to the tensor's planned dtype as <see cref="Write"/> would.
    /// </summary>
    public void Patch(string name, IReadOnlyList<long> indices, float[] values)
    {
        if (indices.Count != values.Length) throw new ArgumentException($"{indices.Count} index(es) for {values.Length} value(s).");
        if (values.Length == 0) return;
        var shard = _shards.FirstOrDefault(s => s.Specs.Any(t => string.Equals(t.Name, name, StringComparison.Ordinal)));
        if (shard.Specs is null) throw new ArgumentException($"{OutputPath}: no tensor '{name}' is planned.");
        var writer = shard.Writer ?? throw new InvalidOperationException($"{OutputPath}: tensor '{name}' is not written yet, cannot patch it.");
        var dtype = shard.Specs.First(t => string.Equals(t.Name, name, StringComparison.Ordinal)).DType;
        int size = dtype.ElementSize();
        var bytes = new byte[values.Length * size];
        FloatEncoding.Encode(values, dtype, bytes);
        writer.Patch(name, [.. indices.Select(i => i * size)], bytes);
    }

    /// <summary>
    /// Finishes every shard, then makes the new checkpoint visible at once: shards are renamed to their (new, unique)
    /// names, the index is renamed over the old one, and only then are the old index's shards removed. A single-file
    /// output written into a directory also removes an older sharded checkpoint there, whose index would otherwise hide it.
    /// </summary>
    public void Complete()
    {
        var last = Current();
        last.Finish();
        foreach (var shard in _shards)
            if (shard.Writer is null)
                throw new InvalidOperationException($"{OutputPath}: shard {shard.Path} was never written.");
        var previous = _indexPath is null ? new List<string>() : ListedShards(_indexPath);
        if (_sharded)
        {
            _indexTemporary = TemporaryFiles.For(_indexPath!);
            File.WriteAllBytes(_indexTemporary, IndexJson());
            foreach (var shard in _shards) shard.Writer!.Commit();
            File.Move(_indexTemporary, _indexPath!, overwrite: true);
        }
        else
        {
            _shards[0].Writer!.Commit();
            if (previous.Count > 0) File.Delete(_indexPath!);
        }
        _completed = true;
        var ours = _shards.Select(s => s.Path).ToHashSet(StringComparer.Ordinal);
        foreach (string old in previous)
            if (!ours.Contains(old)) File.Delete(old);
    }

    /// <summary>The existing shard files an index names (none when there is no readable index).</summary>
    internal static List<string> ListedShards(string indexPath)
    {
        if (!File.Exists(indexPath)) return new List<string>();
        string directory = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object) return new List<string>();
            return map.EnumerateObject()
                .Where(p => p.Value.ValueKind == JsonValueKind.String)
                .Select(p => p.Value.GetString()!)
                .Where(name => name == Path.GetFileName(name) && name.EndsWith(".safetensors", StringComparison.Ordinal))
                .Distinct(StringComparer.Ordinal)
                .Select(name => Path.Combine(directory, name))
                .Where(File.Exists)
                .ToList();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            return new List<string>();
        }
    }

    private byte[] IndexJson()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", _shards.Sum(s => s.Specs.Sum(t => t.ByteLength)));
            foreach (var (k, v) in (_metadata ?? new Dictionary<string, string>()).OrderBy(kv => kv.Key, StringComparer.Ordinal))
                json.WriteString(k, v);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in _shards.SelectMany(s => s.Specs.Select(t => (t.Name, Path.GetFileName(s.Path))))
                         .OrderBy(p => p.Name, StringComparer.Ordinal))
                json.WriteString(name, file);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Abandons an incomplete write: every temporary file and every shard already renamed is deleted.</summary>
    public void Dispose()
    {
        foreach (var shard in _shards) shard.Writer?.Dispose();
        if (_completed) return;
        if (_indexTemporary is not null && File.Exists(_indexTemporary)) File.Delete(_indexTemporary);
        if (_sharded)
            foreach (var shard in _shards)
                if (File.Exists(shard.Path)) File.Delete(shard.Path);
        TemporaryFiles.RemoveCreatedIfEmpty(_directory, _createdRoot);
    }

    /// <summary>Parses sizes as Hugging Face does: <c>5GB</c> = 5·10^9 bytes, <c>500MB</c> = 5·10^8, <c>64KiB</c> = 64·2^10, or a plain byte count.</summary>
    public static long ParseSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        // Hugging Face's units (transformers' convert_file_size_to_int): KB/MB/GB/TB are powers of 10, KiB/MiB/GiB/TiB powers of 2.
        (string Suffix, long Factor)[] units =
        [
            ("TiB", 1L << 40), ("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10),
            ("TB", 1_000_000_000_000L), ("GB", 1_000_000_000L), ("MB", 1_000_000L), ("KB", 1_000L), ("B", 1),
        ];
        foreach (var (suffix, factor) in units)
        {
            if (!t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) continue;
            // Hugging Face reads a lowercase final b ("5Gb") as bits; refuse it rather than guess.
            if (suffix.Length == 2 && t[^1] == 'b')
                throw new ArgumentException($"Cannot read size '{text}': write {suffix} for bytes (a lowercase b means bits to Hugging Face).");
            string number = t[..^suffix.Length].Trim();
            if (double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && value > 0 && double.IsFinite(value)
                && value * factor >= 1 && value * factor < long.MaxValue)
                return (long)(value * factor);
            break;
        }
        if (long.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out long bytes) && bytes > 0) return bytes;
        throw new ArgumentException($"Cannot read size '{text}': expected e.g. 5GB (10^9 bytes), 500MiB (2^20 bytes) or a byte count.");
    }
}
