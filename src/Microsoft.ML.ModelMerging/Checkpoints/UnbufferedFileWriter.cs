using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Writes a new file front to back, bypassing the operating system's page cache where it allows (O_DIRECT on Linux,
/// FILE_FLAG_NO_BUFFERING on Windows). A merged checkpoint is written once and not read back by this process, so
/// copying it into the page cache only costs CPU (on a virtual machine, fresh cache pages can cost more than the
/// disk write itself: <c>docs/benchmarks.md</c>) and evicts the inputs a merge reads several times.
/// Bytes go through an aligned staging buffer and leave it in whole blocks; <see cref="Complete"/> writes the last
/// partial block padded and cuts the file back to its length. Where unbuffered I/O is refused (tmpfs, another
/// platform, a device with larger blocks), the same writer falls back to ordinary writes.
/// </summary>
internal sealed class UnbufferedFileWriter : IDisposable
{
    /// <summary>Offsets, lengths and the buffer address of unbuffered writes are multiples of this (any device's logical block up to 4 KiB).</summary>
    private const int Alignment = 4096;
    private const int DefaultStagingBytes = 8 << 20;

    private readonly SafeFileHandle _handle;
    private readonly byte[] _stagingArray;
    private readonly int _stagingStart;
    private readonly int _stagingBytes;
    private int _staged;
    private long _flushed;
    private bool _completed;

    /// <summary>Creates <paramref name="path"/> (which must not exist).</summary>
    /// <param name="unbuffered">False writes through the page cache, as a <see cref="FileStream"/> would.</param>
    public UnbufferedFileWriter(string path, bool unbuffered = true, int stagingBytes = DefaultStagingBytes)
    {
        if (stagingBytes <= 0 || stagingBytes % Alignment != 0)
            throw new ArgumentOutOfRangeException(nameof(stagingBytes), stagingBytes, $"must be a positive multiple of {Alignment}.");
        Path = path;
        _stagingBytes = stagingBytes;
        bool windowsNoBuffering = unbuffered && OperatingSystem.IsWindows();
        // Shared for writing: a patch of bytes already on disk goes through a second, buffered handle.
        _handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite,
            windowsNoBuffering ? WindowsNoBuffering : FileOptions.None);
        IsUnbuffered = windowsNoBuffering || (unbuffered && TrySetLinuxDirect(_handle, on: true));

        // A pinned array, so its address can be aligned without unsafe code and stays put while the OS reads it.
        _stagingArray = GC.AllocateUninitializedArray<byte>(stagingBytes + Alignment, pinned: true);
        long address = Marshal.UnsafeAddrOfPinnedArrayElement(_stagingArray, 0).ToInt64();
        _stagingStart = (int)((Alignment - (address % Alignment)) % Alignment);
    }

    public string Path { get; }

    /// <summary>Whether writes currently bypass the page cache.</summary>
    public bool IsUnbuffered { get; private set; }

    /// <summary>Bytes written so far (staged or on disk).</summary>
    public long Length => _flushed + _staged;

    private Span<byte> Staging => _stagingArray.AsSpan(_stagingStart, _stagingBytes);

    public void Write(ReadOnlySpan<byte> bytes)
    {
        if (_completed) throw new InvalidOperationException($"{Path}: already complete.");
        while (!bytes.IsEmpty)
        {
            int take = Math.Min(bytes.Length, _stagingBytes - _staged);
            bytes[..take].CopyTo(Staging[_staged..]);
            _staged += take;
            bytes = bytes[take..];
            if (_staged == _stagingBytes) FlushStaging(_stagingBytes);
        }
    }

    /// <summary>
    /// Overwrites bytes already written at <paramref name="offset"/>: in the staging buffer if they are still there,
    /// otherwise on disk through the page cache (blocks already on disk are never written unbuffered again, so the two
    /// paths never overlap).
    /// </summary>
    public void Patch(long offset, ReadOnlySpan<byte> bytes)
    {
        if (offset < 0 || offset + bytes.Length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"{Path}: bytes [{offset}, {offset + bytes.Length}) were not written yet ({Length} written).");
        int onDisk = (int)Math.Clamp(_flushed - offset, 0, bytes.Length);
        if (onDisk > 0)
        {
            using var buffered = File.OpenHandle(Path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
            RandomAccess.Write(buffered, bytes[..onDisk], offset);
            RandomAccess.FlushToDisk(buffered);
        }

        if (onDisk < bytes.Length) bytes[onDisk..].CopyTo(Staging[(int)(offset + onDisk - _flushed)..]);
    }

    /// <summary>Writes what is staged, sets the file's exact length and flushes it to disk.</summary>
    public void Complete()
    {
        if (_completed) return;
        long length = Length;
        if (_staged > 0)
        {
            // An unbuffered write must end on a block boundary: pad it, then cut the file back.
            int padded = IsUnbuffered ? (_staged + Alignment - 1) / Alignment * Alignment : _staged;
            Staging[_staged..padded].Clear();
            FlushStaging(padded);
        }

        if (RandomAccess.GetLength(_handle) != length) RandomAccess.SetLength(_handle, length);
        RandomAccess.FlushToDisk(_handle);
        _completed = true;
    }

    public void Dispose() => _handle.Dispose();

    /// <summary>Writes the first <paramref name="count"/> staged bytes at the end of the file and keeps what lies past them.</summary>
    private void FlushStaging(int count)
    {
        var data = Staging[..count];
        try
        {
            RandomAccess.Write(_handle, data, _flushed);
        }
        catch (IOException) when (IsUnbuffered && _flushed == 0)
        {
            // Refused on the first write (a device whose blocks are larger than 4 KiB): write through the cache instead.
            FallBackToBuffered();
            RandomAccess.Write(_handle, data, _flushed);
        }

        int written = Math.Min(count, _staged);
        _flushed += written;
        Staging[written.._staged].CopyTo(Staging);
        _staged -= written;
    }

    private void FallBackToBuffered()
    {
        if (OperatingSystem.IsLinux() && TrySetLinuxDirect(_handle, on: false)) IsUnbuffered = false;
        else throw new IOException($"{Path}: the device refused an unbuffered write and it cannot be switched off.");
    }

    private const FileOptions WindowsNoBuffering = (FileOptions)0x20000000;
    private const int GetStatusFlags = 3, SetStatusFlags = 4;

    /// <summary>Sets or clears O_DIRECT on an open descriptor; false where the platform or the filesystem does not allow it.</summary>
    private static bool TrySetLinuxDirect(SafeFileHandle handle, bool on)
    {
        if (!OperatingSystem.IsLinux()) return false;
        int direct = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 or Architecture.X86 => 0x4000,
            Architecture.Arm64 or Architecture.Arm => 0x10000,
            _ => 0,
        };
        if (direct == 0) return false;
        int descriptor = (int)handle.DangerousGetHandle();
        int flags = Fcntl(descriptor, GetStatusFlags, 0);
        if (flags < 0) return false;
        return Fcntl(descriptor, SetStatusFlags, on ? flags | direct : flags & ~direct) == 0;
    }

    [DllImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static extern int Fcntl(int descriptor, int command, int argument);
}
