using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// One safetensors file read tensor by tensor with positioned reads straight into the tensor's storage. Only the
/// header is kept in memory, so a model larger than memory can be processed one tensor at a time; unlike a memory map,
/// pages read once do not stay in the process's resident set.
/// </summary>
internal sealed class SafeTensorsFile : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, TensorEntry> _byName;

    public SafeTensorsHeader Header { get; }
    public string FilePath => Header.FilePath;

    private SafeTensorsFile(SafeTensorsHeader header, SafeFileHandle handle)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported.");
        Header = header;
        _handle = handle;
        _byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file not found: {path}", path);
        var header = SafeTensorsHeader.Read(path);
        return new SafeTensorsFile(header, File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess));
    }

    public IReadOnlyList<TensorEntry> Tensors => Header.Tensors;
    public IReadOnlyDictionary<string, string> Metadata => Header.Metadata;
    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorEntry GetEntry(string name) =>
        _byName.TryGetValue(name, out var entry) ? entry : throw new CheckpointFormatException(FilePath, name, "no such tensor in this file.");

    /// <summary>The stored bytes of a tensor.</summary>
    public byte[] ReadBytes(string name)
    {
        var entry = GetEntry(name);
        var bytes = new byte[entry.ByteLength];
        ReadInto(entry, 0, bytes);
        return bytes;
    }

    /// <summary>
    /// Reads <paramref name="destination"/>.Length stored bytes of a tensor, starting <paramref name="offsetInTensor"/> bytes
    /// into it, into a caller's buffer (so a loop over tensors can reuse one buffer).
    /// </summary>
    public void ReadBytes(string name, long offsetInTensor, Span<byte> destination)
    {
        var entry = GetEntry(name);
        if (offsetInTensor < 0 || offsetInTensor + destination.Length > entry.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(offsetInTensor),
                $"bytes [{offsetInTensor}, {offsetInTensor + destination.Length}) are outside tensor '{name}' ({entry.ByteLength} bytes).");
        ReadInto(entry, offsetInTensor, destination);
    }

    /// <summary>
    /// Reads a tensor onto the CPU. Floating-point tensors come back as float32 when <paramref name="asFloat32"/> (the form all
    /// merge math uses); integer and bool tensors always keep their stored type.
    /// </summary>
    public torch.Tensor ReadTensor(string name, bool asFloat32 = true)
    {
        var entry = GetEntry(name);
        var stored = torch.empty(entry.Shape, entry.DType.ToScalarType());
        long done = 0;
        TensorBytes.Visit(stored, span =>
        {
            ReadInto(entry, done, span);
            done += span.Length;
        });
        if (!asFloat32 || !entry.DType.IsFloatingPoint() || entry.DType == SafeTensorsDType.F32) return stored;
        using (stored) return stored.to_type(torch.ScalarType.Float32);
    }

    private void ReadInto(TensorEntry entry, long offsetInTensor, Span<byte> destination)
    {
        long position = Header.DataStart + entry.Offset + offsetInTensor;
        while (destination.Length > 0)
        {
            int read = RandomAccess.Read(_handle, destination, position);
            if (read <= 0)
                throw new CheckpointFormatException(FilePath, entry.Name, "the file ended before the tensor's data (was it truncated while open?).");
            destination = destination[read..];
            position += read;
        }
    }

    public void Dispose() => _handle.Dispose();
}
