namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>
/// Files and folders of a pool written under staging names, then moved into place together just before <c>pool.json</c>
/// is written: a registration that fails or is cancelled leaves the pool's files as they were (a replaced task's old
/// expert and head stay a pair). Whatever was staged and not committed is removed on dispose.
/// </summary>
internal sealed class PoolStaging(string poolDirectory) : IDisposable
{
    private readonly string _suffix = $".{Environment.ProcessId}.incoming";
    private readonly List<(string Staged, string Final)> _entries = [];

    /// <summary>Where to write what belongs at <paramref name="relativePath"/> in the pool; <see cref="Commit"/> moves it there.</summary>
    public string PathFor(string relativePath)
    {
        string final = Path.Combine(poolDirectory, relativePath);
        string staged = final + _suffix;
        _entries.Add((staged, final));
        return staged;
    }

    /// <summary>Moves every staged file or folder to its place, replacing what was there.</summary>
    public void Commit()
    {
        foreach (var (staged, final) in _entries)
        {
            if (Directory.Exists(staged))
            {
                if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
                Directory.Move(staged, final);
            }
            else
            {
                File.Move(staged, final, overwrite: true);
            }
        }

        _entries.Clear();
    }

    public void Dispose()
    {
        foreach (var (staged, _) in _entries)
        {
            if (Directory.Exists(staged)) Directory.Delete(staged, recursive: true);
            else if (File.Exists(staged)) File.Delete(staged);
        }

        _entries.Clear();
    }
}
