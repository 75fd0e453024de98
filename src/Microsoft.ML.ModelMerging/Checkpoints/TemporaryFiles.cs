using System.Diagnostics;
using System.Globalization;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Names of the temporary files an output is written to before it is renamed into place, and removal of the ones an
/// interrupted run left behind. A name carries the writing process's id, <c>.{target}.{pid}.{token}.partial</c>, so a
/// later run can tell a file a live process is still writing from one nobody holds any more.
/// </summary>
internal static class TemporaryFiles
{
    public const string Suffix = ".partial";

    /// <summary>A fresh hidden temporary name next to <paramref name="targetPath"/>.</summary>
    public static string For(string targetPath)
    {
        string full = Path.GetFullPath(targetPath);
        return Path.Combine(Path.GetDirectoryName(full)!,
            $".{Path.GetFileName(full)}.{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}.{Guid.NewGuid():N}{Suffix}");
    }

    /// <summary>
    /// Deletes temporary files in <paramref name="directory"/> whose target name starts with <paramref name="targetPrefix"/>
    /// and whose writing process is gone. Files of live processes (this one included) and files not named by
    /// <see cref="For"/> are left alone. Returns the deleted paths.
    /// </summary>
    public static IReadOnlyList<string> RemoveStale(string directory, string targetPrefix)
    {
        var removed = new List<string>();
        if (!Directory.Exists(directory)) return removed;
        foreach (string file in Directory.EnumerateFiles(directory, "." + targetPrefix + "*" + Suffix))
        {
            if (OwnerProcess(Path.GetFileName(file)) is not int pid || IsAlive(pid)) continue;
            try
            {
                File.Delete(file);
                removed.Add(file);
            }
            catch (IOException)
            {
                // Another cleaner got there first, or the file is in use after all: leave it.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return removed;
    }

    /// <summary>
    /// Deletes the temporary directories of <paramref name="target"/> exactly (names made by <see cref="For"/> for it, not for
    /// a longer name that starts the same) whose writing process is gone, with what is inside them.
    /// </summary>
    public static IReadOnlyList<string> RemoveStaleDirectories(string directory, string target)
    {
        var removed = new List<string>();
        if (!Directory.Exists(directory)) return removed;
        foreach (string folder in Directory.EnumerateDirectories(directory, "." + target + ".*" + Suffix))
        {
            string name = Path.GetFileName(folder);
            if (OwnerProcess(name) is not int pid || IsAlive(pid)) continue;
            string[] parts = name[1..^Suffix.Length].Split('.');
            if (string.Join('.', parts[..^2]) != target) continue;
            try
            {
                Directory.Delete(folder, recursive: true);
                removed.Add(folder);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return removed;
    }

    /// <summary>The top-most folder of <paramref name="directory"/>'s path that does not exist yet (null when it exists).</summary>
    public static string? TopmostMissing(string directory)
    {
        string? missing = null;
        for (string? dir = Path.GetFullPath(directory); dir is not null && !Directory.Exists(dir); dir = Path.GetDirectoryName(dir)) missing = dir;
        return missing;
    }

    /// <summary>
    /// After a write that did not complete: removes <paramref name="directory"/> and its parents up to
    /// <paramref name="createdRoot"/> (what the write created, <see cref="TopmostMissing"/>) while they are empty.
    /// </summary>
    public static void RemoveCreatedIfEmpty(string directory, string? createdRoot)
    {
        if (createdRoot is null) return;
        string root = Path.GetFullPath(createdRoot);
        for (string? dir = Path.GetFullPath(directory); dir is not null && dir.StartsWith(root, StringComparison.Ordinal); dir = Path.GetDirectoryName(dir))
        {
            try
            {
                if (!Directory.Exists(dir) || Directory.EnumerateFileSystemEntries(dir).Any()) return;
                Directory.Delete(dir);
            }
            catch (IOException)
            {
                return;
            }
            catch (UnauthorizedAccessException)
            {
                return;
            }
        }
    }

    /// <summary>The process id in a name made by <see cref="For"/>, or null for any other name.</summary>
    internal static int? OwnerProcess(string fileName)
    {
        if (!fileName.StartsWith('.') || !fileName.EndsWith(Suffix, StringComparison.Ordinal)) return null;
        string[] parts = fileName[..^Suffix.Length].Split('.');
        if (parts.Length < 4 || parts[^1].Length != 32 || !parts[^1].All(Uri.IsHexDigit)) return null;
        return int.TryParse(parts[^2], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 ? pid : null;
    }

    internal static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        if (OperatingSystem.IsLinux()) return Directory.Exists($"/proc/{pid}");
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }
}
