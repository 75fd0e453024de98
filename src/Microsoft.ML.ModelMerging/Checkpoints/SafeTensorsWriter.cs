using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Streams tensors into a safetensors file one at a time. The header is written first from the declared plan, so the whole
/// model never has to be in memory. Everything goes to a temporary file next to the target and is renamed only by
/// <see cref="Complete"/>: an interrupted or failed write leaves no partial file under the target name.
/// </summary>
internal sealed class SafeTensorsWriter : IDisposable
{
    private readonly IReadOnlyList<TensorSpec> _plan;
    private readonly long _dataStart;
    private UnbufferedFileWriter? _file;
    private int _next;
    private bool _finished;
    private bool _committed;

    public string TargetPath { get; }
    public string TemporaryPath { get; }
    public IReadOnlyList<TensorSpec> Plan => _plan;
    /// <summary>Size of the complete file in bytes.</summary>
    public long TotalBytes { get; }

    public SafeTensorsWriter(string path, IReadOnlyList<TensorSpec> plan, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var duplicate = plan.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"{path}: tensor '{duplicate.Key}' is planned twice.");
        _plan = plan;
        TargetPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(TargetPath)!;
        Directory.CreateDirectory(directory);
        // A run killed earlier (kill -9, power loss) left its temporary file behind: remove it if its process is gone.
        TemporaryFiles.RemoveStale(directory, Path.GetFileName(TargetPath) + ".");
        TemporaryPath = TemporaryFiles.For(TargetPath);
        byte[] header = SafeTensorsHeader.Serialize(plan, metadata);
        _dataStart = 8 + header.Length;
        TotalBytes = _dataStart + plan.Sum(t => t.ByteLength);
        _file = new UnbufferedFileWriter(TemporaryPath);
        Span<byte> prefix = stackalloc byte[8];
        BitConverter.TryWriteBytes(prefix, (ulong)header.Length);
        _file.Write(prefix);
        _file.Write(header);
    }

    /// <summary>The next tensor of the plan that <see cref="Write(torch.Tensor)"/> expects, or null when all are written.</summary>
    public TensorSpec? Next => _next < _plan.Count ? _plan[_next] : null;

    /// <summary>Writes the next planned tensor, converting it to the planned dtype (e.g. float32 math written as bf16).</summary>
    public void Write(torch.Tensor tensor)
    {
        var spec = Next ?? throw new InvalidOperationException($"{TargetPath}: all {_plan.Count} planned tensors are already written.");
        if (!tensor.shape.SequenceEqual(spec.Shape))
            throw new ArgumentException($"{TargetPath}: tensor '{spec.Name}' has shape [{string.Join(", ", tensor.shape)}], planned [{string.Join(", ", spec.Shape)}].");
        using var scope = torch.NewDisposeScope();
        var stored = tensor.device_type == DeviceType.CPU ? tensor : tensor.cpu();
        if (stored.dtype != spec.DType.ToScalarType()) stored = stored.to_type(spec.DType.ToScalarType());
        stored = stored.contiguous();
        TensorBytes.Visit(stored, span => Output().Write(span));
        _next++;
    }

    /// <summary>
    /// Writes the next planned tensor, a floating-point one, from float32 values given in consecutive pieces, stored as
    /// its planned dtype exactly as <see cref="Write(torch.Tensor)"/> would store them (without TorchSharp).
    /// </summary>
    public void WriteFloats(IReadOnlyList<ReadOnlyMemory<float>> parts)
    {
        var spec = Next ?? throw new InvalidOperationException($"{TargetPath}: all {_plan.Count} planned tensors are already written.");
        long count = parts.Sum(p => (long)p.Length);
        long expected = TensorEntry.ShapeElementCount(spec.Shape);
        if (count != expected) throw new ArgumentException($"{TargetPath}: tensor '{spec.Name}' has {expected} entries, got {count} values.");
        if (!FloatEncoding.CanEncode(spec.DType)) throw new ArgumentException($"{TargetPath}: tensor '{spec.Name}' is stored as {spec.DType}, not a float type.");
        int size = spec.DType.ElementSize();
        byte[]? encoded = spec.DType == SafeTensorsDType.F32 ? null : new byte[EncodeBlock * size];
        foreach (var part in parts)
        {
            var values = part.Span;
            if (encoded is null)
            {
                Output().Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
                continue;
            }

            for (int start = 0; start < values.Length; start += EncodeBlock)
            {
                var block = values.Slice(start, Math.Min(EncodeBlock, values.Length - start));
                var bytes = encoded.AsSpan(0, block.Length * size);
                FloatEncoding.Encode(block, spec.DType, bytes);
                Output().Write(bytes);
            }
        }

        _next++;
    }

    private const int EncodeBlock = 1 << 16;

    /// <summary>Writes the next planned tensor from bytes already in its stored form.</summary>
    public void WriteBytes(ReadOnlySpan<byte> bytes)
    {
        var spec = Next ?? throw new InvalidOperationException($"{TargetPath}: all {_plan.Count} planned tensors are already written.");
        if (bytes.Length != spec.ByteLength)
            throw new ArgumentException($"{TargetPath}: tensor '{spec.Name}' needs {spec.ByteLength} bytes, got {bytes.Length}.");
        Output().Write(bytes);
        _next++;
    }

    /// <summary>
    /// Overwrites elements of a tensor already written, in the temporary file (before <see cref="Commit"/>; after
    /// <see cref="Finish"/> the file is reopened and flushed again): element k of <paramref name="elements"/> (stored
    /// form, all of one size) goes to byte offset <paramref name="byteOffsets"/>[k] from the tensor's start.
    /// </summary>
    public void Patch(string name, IReadOnlyList<long> byteOffsets, ReadOnlySpan<byte> elements)
    {
        if (_committed) throw new InvalidOperationException($"{TargetPath}: already committed, cannot patch '{name}'.");
        if (byteOffsets.Count == 0) return;
        if (elements.Length % byteOffsets.Count != 0) throw new ArgumentException($"{elements.Length} byte(s) for {byteOffsets.Count} element(s).");
        int size = elements.Length / byteOffsets.Count;
        long start = _dataStart;
        int index = 0;
        for (; index < _plan.Count && !string.Equals(_plan[index].Name, name, StringComparison.Ordinal); index++) start += _plan[index].ByteLength;
        if (index == _plan.Count) throw new ArgumentException($"{TargetPath}: no tensor '{name}' is planned.");
        if (index >= _next) throw new InvalidOperationException($"{TargetPath}: tensor '{name}' is not written yet, cannot patch it.");
        foreach (long offset in byteOffsets)
            if (offset < 0 || offset + size > _plan[index].ByteLength)
                throw new ArgumentOutOfRangeException(nameof(byteOffsets), offset, $"{TargetPath}: patch outside tensor '{name}'.");

        if (_file is not null)
        {
            _file.Patch([.. byteOffsets.Select(offset => start + offset)], elements);
            return;
        }

        using var stream = new FileStream(TemporaryPath, FileMode.Open, FileAccess.Write, FileShare.None);
        for (int k = 0; k < byteOffsets.Count; k++)
        {
            stream.Position = start + byteOffsets[k];
            stream.Write(elements.Slice(k * size, size));
        }

        stream.Flush(flushToDisk: true);
    }

    private UnbufferedFileWriter Output() => _file ?? throw new ObjectDisposedException(TargetPath);

    /// <summary>Flushes the temporary file to disk after checking every planned tensor was written. Does not rename.</summary>
    public void Finish()
    {
        if (_finished) return;
        if (_next != _plan.Count)
            throw new InvalidOperationException($"{TargetPath}: {_plan.Count - _next} planned tensors were not written (next: '{_plan[_next].Name}').");
        _file!.Complete();
        _file.Dispose();
        _file = null;
        _finished = true;
    }

    /// <summary>Moves the finished temporary file to the target name (replacing an older file there).</summary>
    public void Commit()
    {
        if (!_finished) throw new InvalidOperationException($"{TargetPath}: Finish() must run before Commit().");
        if (_committed) return;
        File.Move(TemporaryPath, TargetPath, overwrite: true);
        _committed = true;
    }

    public void Complete()
    {
        Finish();
        Commit();
    }

    /// <summary>Abandons an incomplete write: the temporary file is deleted and the target is untouched.</summary>
    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
        if (!_committed && File.Exists(TemporaryPath)) File.Delete(TemporaryPath);
    }

    /// <summary>Writes a whole dictionary of tensors, sorted by name. Floating-point tensors are stored as <paramref name="floatType"/> (default F32).</summary>
    public static void Save(string path, IReadOnlyDictionary<string, torch.Tensor> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, SafeTensorsDType floatType = SafeTensorsDType.F32)
    {
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var plan = names.Select(n => PlanFor(n, tensors[n], floatType)).ToList();
        using var writer = new SafeTensorsWriter(path, plan, metadata);
        foreach (var n in names) writer.Write(tensors[n]);
        writer.Complete();
    }

    /// <summary>The spec a tensor is stored under: floating-point tensors take <paramref name="floatType"/>, others keep their type.</summary>
    public static TensorSpec PlanFor(string name, torch.Tensor tensor, SafeTensorsDType floatType)
    {
        var own = SafeTensorsDTypes.FromScalarType(tensor.dtype);
        return new TensorSpec(name, own.IsFloatingPoint() ? floatType : own, tensor.shape.ToArray());
    }
}
