using System.IO.MemoryMappedFiles;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// One safetensors file, memory-mapped: reading a tensor touches only that tensor's pages, so a model larger than memory
/// can be processed one tensor at a time.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly Dictionary<string, TensorEntry> _byName;

    public SafeTensorsHeader Header { get; }
    public string FilePath => Header.FilePath;

    private SafeTensorsFile(SafeTensorsHeader header)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported.");
        Header = header;
        _byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        if (header.DataLength > 0)
        {
            _map = MemoryMappedFile.CreateFromFile(header.FilePath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            _base = pointer + _view.PointerOffset;
        }
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file not found: {path}", path);
        return new SafeTensorsFile(SafeTensorsHeader.Read(path));
    }

    public IReadOnlyList<TensorEntry> Tensors => Header.Tensors;
    public IReadOnlyDictionary<string, string> Metadata => Header.Metadata;
    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorEntry GetEntry(string name) =>
        _byName.TryGetValue(name, out var entry) ? entry : throw new CheckpointFormatException(FilePath, name, "no such tensor in this file.");

    /// <summary>The stored bytes of a tensor, copied out.</summary>
    public byte[] ReadBytes(string name)
    {
        var entry = GetEntry(name);
        var bytes = new byte[entry.ByteLength];
        fixed (byte* destination = bytes) Copy(entry, destination);
        return bytes;
    }

    /// <summary>
    /// Reads a tensor onto the CPU. Floating-point tensors come back as float32 when <paramref name="asFloat32"/> (the form all
    /// merge math uses); integer and bool tensors always keep their stored type.
    /// </summary>
    public torch.Tensor ReadTensor(string name, bool asFloat32 = true)
    {
        var entry = GetEntry(name);
        var stored = torch.empty(entry.Shape, entry.DType.ToScalarType());
        if (entry.ByteLength > 0) TensorBytes.Write(stored, _base + Header.DataStart + entry.Offset);
        if (!asFloat32 || !entry.DType.IsFloatingPoint() || entry.DType == SafeTensorsDType.F32) return stored;
        using (stored) return stored.to_type(torch.ScalarType.Float32);
    }

    private void Copy(TensorEntry entry, byte* destination)
    {
        if (entry.ByteLength == 0) return;
        Buffer.MemoryCopy(_base + Header.DataStart + entry.Offset, destination, entry.ByteLength, entry.ByteLength);
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}
