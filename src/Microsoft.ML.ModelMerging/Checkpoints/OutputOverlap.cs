namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Refuses an output that would overwrite or delete one of the job's inputs, comparing files by identity (inode, file id),
/// not by how their paths are spelled: <c>--out base.safetensors</c>, <c>--out ./dir/../base.safetensors</c> and a hard
/// link to the base are all the same file.
/// </summary>
internal static class OutputOverlap
{
    /// <param name="outputPath">The output as given to <see cref="CheckpointWriter"/>: a <c>.safetensors</c> file or a directory.</param>
    /// <param name="inputFiles">Every file the job reads (single files, shards and index files).</param>
    /// <exception cref="ArgumentException">The output is, or (for a directory output) contains, one of the inputs.</exception>
    /// <param name="directOnly">For a directory output whose files have fixed names beside each other (an adaptation
    /// result): only inputs directly inside it are at risk, not those in its sub-folders.</param>
    public static void EnsureDistinct(string outputPath, IEnumerable<string> inputFiles, bool directOnly = false)
    {
        bool toFile = outputPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
        var inputs = inputFiles.Distinct(StringComparer.Ordinal).Select(p => (Path: p, Id: FileIdentity.Of(p))).Where(i => i.Id is not null).ToList();
        if (toFile)
        {
            // The file itself, and what a sharded write to the same name replaces: its index and the shards it lists.
            string full = Path.GetFullPath(outputPath);
            string index = Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full) + ".safetensors.index.json");
            foreach (string target in CheckpointWriter.ListedShards(index).Prepend(index).Prepend(full))
                if (FileIdentity.Of(target) is { } id && inputs.FirstOrDefault(i => i.Id == id) is { Path: not null } hit)
                    throw new ArgumentException($"--out {outputPath} is the input {hit.Path}: writing it would destroy that input; choose another output path.");
            return;
        }

        if (FileIdentity.Of(outputPath) is not { } directory) return;
        foreach (var (input, _) in inputs)
        {
            foreach (string ancestor in directOnly ? Parents(input) : Ancestors(input))
                if (FileIdentity.Of(ancestor) == directory)
                    throw new ArgumentException(directOnly
                        ? $"--out {outputPath} holds the input {input}: the result files written there could replace it; choose a directory without inputs."
                        : $"--out {outputPath} holds the input {input}: a directory output replaces the checkpoint inside it; choose a directory without inputs.");
        }
    }

    /// <summary>The folders above a file, along its spelled path and its resolved one (symbolic links followed).</summary>
    private static IEnumerable<string> Ancestors(string file)
    {
        foreach (string path in SpelledAndResolved(file))
            for (string? dir = Path.GetDirectoryName(path); dir is not null; dir = Path.GetDirectoryName(dir))
                yield return dir;
    }

    /// <summary>The folder holding a file, along its spelled path and its resolved one.</summary>
    private static IEnumerable<string> Parents(string file) => SpelledAndResolved(file).Select(path => Path.GetDirectoryName(path)!);

    private static List<string> SpelledAndResolved(string file)
    {
        var paths = new List<string> { Path.GetFullPath(file) };
        if (new FileInfo(file).ResolveLinkTarget(returnFinalTarget: true) is { } target) paths.Add(Path.GetFullPath(target.FullName));
        return paths;
    }
}
