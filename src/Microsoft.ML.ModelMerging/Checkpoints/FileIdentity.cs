using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// What makes two paths the same file whatever their spelling (relative, <c>./</c>, symbolic or hard links): device and
/// inode on Unix, volume serial number and file index on Windows. Falls back to the fully resolved path where neither
/// can be read.
/// </summary>
internal readonly record struct FileIdentity(ulong Device, ulong Node, string? ResolvedPath)
{
    /// <summary>The identity of an existing file or directory; null when nothing exists at <paramref name="path"/>.</summary>
    public static FileIdentity? Of(string path)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) return null;
        try
        {
            if (OperatingSystem.IsWindows()) return OfWindows(path);
            if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) return OfUnix(path);
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException or IOException)
        {
        }
        return new FileIdentity(0, 0, Resolve(path));
    }

    private static string Resolve(string path)
    {
        var info = new FileInfo(Path.GetFullPath(path));
        var target = info.ResolveLinkTarget(returnFinalTarget: true);
        return Path.GetFullPath(target?.FullName ?? info.FullName);
    }

    [DllImport("libc", EntryPoint = "stat", SetLastError = true)]
    private static extern int Stat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buffer);

    private static FileIdentity? OfUnix(string path)
    {
        var buffer = new byte[512]; // larger than struct stat on every supported platform
        if (Stat(path, buffer) != 0) throw new IOException($"stat({path}) failed with errno {Marshal.GetLastPInvokeError()}.");
        // Linux (x64 and arm64): dev_t st_dev (8 bytes), ino_t st_ino (8). macOS: dev_t st_dev (4), mode (2), nlink (2), ino (8).
        return OperatingSystem.IsLinux()
            ? new FileIdentity(BitConverter.ToUInt64(buffer, 0), BitConverter.ToUInt64(buffer, 8), null)
            : new FileIdentity(BitConverter.ToUInt32(buffer, 0), BitConverter.ToUInt64(buffer, 8), null);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ByHandleFileInformation
    {
        public uint FileAttributes;
        public long CreationTime, LastAccessTime, LastWriteTime;
        public uint VolumeSerialNumber, FileSizeHigh, FileSizeLow, NumberOfLinks, FileIndexHigh, FileIndexLow;
    }

    [DllImport("kernel32.dll", SetLastError = true)]
    private static extern bool GetFileInformationByHandle(SafeFileHandle handle, out ByHandleFileInformation information);

    private static FileIdentity? OfWindows(string path)
    {
        // FILE_FLAG_BACKUP_SEMANTICS (0x02000000) lets directories be opened too.
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, (FileOptions)0x02000000);
        if (!GetFileInformationByHandle(handle, out var info)) throw new IOException($"{path}: cannot read its file id.");
        return new FileIdentity(info.VolumeSerialNumber, ((ulong)info.FileIndexHigh << 32) | info.FileIndexLow, null);
    }
}
