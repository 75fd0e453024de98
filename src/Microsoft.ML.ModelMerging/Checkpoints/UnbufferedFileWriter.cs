using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Writes a new file front to back, bypassing the operating system's page cache where it allows (O_DIRECT on Linux,
/// FILE_FLAG_NO_BUFFERING on Windows). A merged checkpoint is written once and not read back by this process, so
/// copying it into the page cache only costs CPU (on a virtual machine, fresh cache pages can cost more than the
/// disk write itself: <c>docs/benchmarks.md</c>) and evicts the inputs a merge reads several times.
/// </summary>
/// <remarks>
/// Bytes are copied into aligned staging buffers; a full buffer goes to the disk on a thread of its own while the
/// caller fills the next, so the caller waits for the disk only when every buffer is in flight.
/// <see cref="Complete"/> writes the last partial block padded and cuts the file back to its length. Where unbuffered
/// I/O is refused (tmpfs, another platform, a device with larger blocks), the same writer falls back to ordinary writes.
/// </remarks>
internal sealed class UnbufferedFileWriter : IDisposable
{
    /// <summary>Offsets, lengths and the buffer address of unbuffered writes are multiples of this (any device's logical block up to 4 KiB).</summary>
    private const int Alignment = 4096;
    private const int DefaultStagingBytes = 8 << 20;
    private const int StagingBufferCount = 3;

    private readonly SafeFileHandle _handle;
    private readonly byte[][] _arrays;
    private readonly int[] _starts;
    private readonly int _stagingBytes;
    private readonly BlockingCollection<(int Buffer, long Offset, int Count)> _pending = new();
    private readonly BlockingCollection<int> _free = new();
    private readonly Thread _io;
    private ExceptionDispatchInfo? _ioError;
    private int _inFlight;
    private int _current;
    private int _staged;
    private long _submitted;
    private bool _completed;

    /// <summary>Creates <paramref name="path"/> (which must not exist).</summary>
    /// <param name="path">The file to create.</param>
    /// <param name="unbuffered">False writes through the page cache, as a <see cref="FileStream"/> would.</param>
    /// <param name="stagingBytes">Size of the aligned buffer writes are gathered in before they are submitted.</param>
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

        // Pinned arrays, so their addresses can be aligned without unsafe code and stay put while the OS reads them.
        _arrays = new byte[StagingBufferCount][];
        _starts = new int[StagingBufferCount];
        for (int i = 0; i < StagingBufferCount; i++)
        {
            _arrays[i] = GC.AllocateUninitializedArray<byte>(stagingBytes + Alignment, pinned: true);
            long address = Marshal.UnsafeAddrOfPinnedArrayElement(_arrays[i], 0).ToInt64();
            _starts[i] = (int)((Alignment - (address % Alignment)) % Alignment);
            if (i > 0) _free.Add(i);
        }

        _io = new Thread(WriteSubmitted) { IsBackground = true, Name = "mlmerge output writer" };
        _io.Start();
    }

    public string Path { get; }

    /// <summary>Whether writes bypass the page cache (false after a fallback).</summary>
    public bool IsUnbuffered { get; private set; }

    /// <summary>Bytes written so far (staged, in flight or on disk).</summary>
    public long Length => _submitted + _staged;

    private Span<byte> Buffer(int index) => _arrays[index].AsSpan(_starts[index], _stagingBytes);

    public void Write(ReadOnlySpan<byte> bytes)
    {
        if (_completed) throw new InvalidOperationException($"{Path}: already complete.");
        while (!bytes.IsEmpty)
        {
            int take = Math.Min(bytes.Length, _stagingBytes - _staged);
            bytes[..take].CopyTo(Buffer(_current)[_staged..]);
            _staged += take;
            bytes = bytes[take..];
            if (_staged == _stagingBytes) Submit(_stagingBytes);
        }
    }

    /// <summary>
    /// Overwrites bytes already written: element k of <paramref name="elements"/> (all of one size) goes to
    /// <paramref name="offsets"/>[k]. Bytes still staged are changed in place; bytes on disk go through the page cache on
    /// a second handle, once the writes in flight are done, with one flush for the lot (blocks already on disk are
    /// never written unbuffered again, so the two paths never overlap).
    /// </summary>
    public void Patch(IReadOnlyList<long> offsets, ReadOnlySpan<byte> elements)
    {
        if (offsets.Count == 0) return;
        if (elements.Length % offsets.Count != 0) throw new ArgumentException($"{elements.Length} byte(s) for {offsets.Count} element(s).");
        int size = elements.Length / offsets.Count;
        foreach (long offset in offsets)
        {
            if (offset < 0 || offset + size > Length)
                throw new ArgumentOutOfRangeException(nameof(offsets), offset, $"{Path}: bytes [{offset}, {offset + size}) were not written yet ({Length} written).");
        }

        SafeFileHandle? buffered = null;
        try
        {
            for (int k = 0; k < offsets.Count; k++)
            {
                long offset = offsets[k];
                var bytes = elements.Slice(k * size, size);
                int onDisk = (int)Math.Clamp(_submitted - offset, 0, size);
                if (onDisk > 0)
                {
                    if (buffered is null)
                    {
                        WaitForWrites();
                        buffered = File.OpenHandle(Path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
                    }

                    RandomAccess.Write(buffered, bytes[..onDisk], offset);
                }

                if (onDisk < size) bytes[onDisk..].CopyTo(Buffer(_current)[(int)(offset + onDisk - _submitted)..]);
            }

            if (buffered is not null) RandomAccess.FlushToDisk(buffered);
        }
        finally
        {
            buffered?.Dispose();
        }
    }

    /// <summary>Writes what is staged, waits for the disk, sets the file's exact length and flushes it.</summary>
    public void Complete()
    {
        if (_completed) return;
        long length = Length;
        if (_staged > 0)
        {
            // An unbuffered write must end on a block boundary: pad it, then cut the file back.
            int padded = IsUnbuffered ? (_staged + Alignment - 1) / Alignment * Alignment : _staged;
            Buffer(_current)[_staged..padded].Clear();
            Submit(padded);
        }

        WaitForWrites();
        if (RandomAccess.GetLength(_handle) != length) RandomAccess.SetLength(_handle, length);
        RandomAccess.FlushToDisk(_handle);
        _completed = true;
    }

    public void Dispose()
    {
        if (_pending.IsAddingCompleted) return;
        _pending.CompleteAdding();
        _io.Join();
        _handle.Dispose();
        _pending.Dispose();
        _free.Dispose();
    }

    /// <summary>Hands the current buffer's first <paramref name="count"/> bytes to the writing thread and takes a free buffer.</summary>
    private void Submit(int count)
    {
        ThrowIfWriteFailed();
        Interlocked.Increment(ref _inFlight);
        _pending.Add((_current, _submitted, count));
        _submitted += Math.Min(count, _staged);
        _staged = 0;
        _current = _free.Take();
        ThrowIfWriteFailed();
    }

    /// <summary>Rethrows, on the caller's thread, the error of a write that failed on the writing thread.</summary>
    private void ThrowIfWriteFailed() => Volatile.Read(ref _ioError)?.Throw();

    private void WaitForWrites()
    {
        SpinWait spin = default;
        while (Volatile.Read(ref _inFlight) > 0 && Volatile.Read(ref _ioError) is null) spin.SpinOnce(sleep1Threshold: 10);
        ThrowIfWriteFailed();
    }

    /// <summary>The writing thread: buffers in order, each back to the free list once on disk.</summary>
    private void WriteSubmitted()
    {
        foreach (var (buffer, offset, count) in _pending.GetConsumingEnumerable())
        {
            try
            {
                if (Volatile.Read(ref _ioError) is null) WriteAt(Buffer(buffer)[..count], offset);
            }
            catch (Exception e)
            {
                Volatile.Write(ref _ioError, ExceptionDispatchInfo.Capture(e));
            }
            finally
            {
                _free.Add(buffer);
                Interlocked.Decrement(ref _inFlight);
            }
        }
    }

    private void WriteAt(ReadOnlySpan<byte> data, long offset)
    {
        try
        {
            RandomAccess.Write(_handle, data, offset);
        }
        catch (IOException) when (IsUnbuffered && offset == 0)
        {
            // Refused on the first write (a device whose blocks are larger than 4 KiB): write through the cache instead.
            if (!OperatingSystem.IsLinux() || !TrySetLinuxDirect(_handle, on: false))
                throw new IOException($"{Path}: the device refused an unbuffered write and it cannot be switched off.");
            IsUnbuffered = false;
            RandomAccess.Write(_handle, data, offset);
        }
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
