using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Benchmarks.Fuzzing;

/// <summary>What the fuzzer saw: outcome counts, per mutation, and every defect (with the seed that reproduces it).</summary>
public sealed class FuzzReport
{
    public int Files { get; set; }
    /// <summary>Both the library and the reference parse accepted, with identical tensors, metadata and bytes.</summary>
    public int Accepted { get; set; }
    /// <summary>Both rejected; the library with CheckpointFormatException naming the file.</summary>
    public int Rejected { get; set; }
    public List<string> Defects { get; } = [];
    public SortedDictionary<string, (int Accepted, int Rejected)> ByMutation { get; } = new(StringComparer.Ordinal);
    public TimeSpan Elapsed { get; set; }

    public string Describe()
    {
        var text = new System.Text.StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{Files} files in {Elapsed.TotalSeconds:F1} s: {Accepted} accepted (identical to the reference parse), {Rejected} rejected (CheckpointFormatException, reference rejects too), {Defects.Count} defects");
        text.AppendLine("mutation (first applied)  accepted  rejected");
        foreach (var (mutation, (accepted, rejected)) in ByMutation)
            text.AppendLine(CultureInfo.InvariantCulture, $"  {mutation,-22} {accepted,9} {rejected,9}");
        foreach (var defect in Defects.Take(20)) text.AppendLine("DEFECT " + defect);
        return text.ToString();
    }
}

/// <summary>
/// The <c>fuzz-safetensors</c> benchmark: mutated files through <see cref="Checkpoint.Open"/> and every read, checked
/// against <see cref="ReferenceSafeTensorsParser"/>. A defect is any exception other than CheckpointFormatException,
/// such an exception whose message does not start with the file's path, a read taking longer than the time limit, a
/// file one side accepts and the other rejects, or an accepted file read differently from the reference.
/// </summary>
public static class SafeTensorsFuzzer
{
    /// <param name="trace">Receives each file's number and mutation before it is read, so a crash of the process names its file.</param>
    public static FuzzReport Run(int files, int seed, string workDirectory, TimeSpan? perFileLimit = null, TextWriter? log = null, TextWriter? trace = null)
    {
        var limit = perFileLimit ?? TimeSpan.FromSeconds(10);
        var report = new FuzzReport();
        Directory.CreateDirectory(workDirectory);
        string path = Path.Combine(workDirectory, "fuzz.safetensors");
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < files; i++)
        {
            int fileSeed = FileSeed(seed, i);
            var (bytes, mutation) = new SafeTensorsMutator(fileSeed).Next();
            File.WriteAllBytes(path, bytes);
            trace?.WriteLine(FormattableString.Invariant($"file {i} seed {fileSeed}: {mutation}"));
            trace?.Flush();
            var expected = ReferenceSafeTensorsParser.Parse(bytes);
            var read = Task.Run(() => Check(path, bytes, expected));
            string label = mutation.Split('+')[0];
            report.Files++;
            if (!read.Wait(limit))
            {
                report.Defects.Add($"seed {seed} file {i} ({mutation}): no answer within {limit.TotalSeconds} s (hang)");
                break; // the hung read still holds the file
            }
            var (accepted, defect) = read.Result;
            if (defect is not null)
            {
                report.Defects.Add($"seed {seed} file {i} ({mutation}): {defect}");
                continue;
            }
            var (a, r) = report.ByMutation.GetValueOrDefault(label);
            report.ByMutation[label] = accepted ? (a + 1, r) : (a, r + 1);
            if (accepted) report.Accepted++;
            else report.Rejected++;
            if (log is not null && (i + 1) % 10_000 == 0) log.WriteLine(FormattableString.Invariant($"{i + 1} files, {report.Defects.Count} defects, {clock.Elapsed.TotalSeconds:F0} s"));
        }
        report.Elapsed = clock.Elapsed;
        return report;
    }

    /// <summary>
    /// The seed of file <paramref name="index"/>: a fixed mix (SplitMix64's finaliser) of the run's seed and the index, so a run
    /// and its defects reproduce in any process (<see cref="HashCode"/> is randomised per process and must not be used here).
    /// </summary>
    public static int FileSeed(int seed, int index)
    {
        ulong z = ((ulong)(uint)seed << 32 | (uint)index) + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & int.MaxValue);
    }

    /// <summary>(accepted, defect or null).</summary>
    private static (bool Accepted, string? Defect) Check(string path, byte[] bytes, ReferenceFile? expected)
    {
        try
        {
            using var checkpoint = Checkpoint.Open(path);
            if (expected is null) return (true, "the library accepted a file the reference parse rejects");
            return (true, Compare(checkpoint, bytes, expected));
        }
        catch (CheckpointFormatException e)
        {
            if (!e.Message.StartsWith(path, StringComparison.Ordinal)) return (false, $"message does not name the file: {e.Message}");
            return (false, expected is null ? null : $"the library rejected a file the reference parse accepts: {e.Message}");
        }
        catch (Exception e)
        {
            return (false, $"{e.GetType().Name} instead of CheckpointFormatException: {e.Message}");
        }
    }

    private static string? Compare(Checkpoint checkpoint, byte[] bytes, ReferenceFile expected)
    {
        if (checkpoint.Tensors.Count != expected.Tensors.Count) return $"{checkpoint.Tensors.Count} tensors, reference {expected.Tensors.Count}";
        if (checkpoint.Metadata.Count != expected.Metadata.Count ||
            checkpoint.Metadata.Any(kv => !expected.Metadata.TryGetValue(kv.Key, out var v) || v != kv.Value))
            return "metadata differs from the reference";
        for (int t = 0; t < expected.Tensors.Count; t++)
        {
            var actual = checkpoint.Tensors[t];
            var reference = expected.Tensors[t];
            if (actual.Name != reference.Name || actual.DType.ToHeaderName() != reference.DType || !actual.Shape.SequenceEqual(reference.Shape) ||
                actual.Offset != reference.Begin || actual.ByteLength != reference.End - reference.Begin)
                return $"tensor '{reference.Name}' differs: {actual.Name} {actual.DType} {actual.ShapeText} @{actual.Offset}+{actual.ByteLength}";
            byte[] data = checkpoint.ReadBytes(actual.Name);
            if (!data.AsSpan().SequenceEqual(bytes.AsSpan((int)(expected.DataStart + reference.Begin), data.Length)))
                return $"tensor '{reference.Name}': bytes differ from the file";
            if (actual.ByteLength <= 4096)
            {
                // libtorch sees the shape too: a shape it cannot take would abort the process here.
                using var tensor = checkpoint.ReadTensor(actual.Name, asFloat32: false);
                if (!tensor.shape.SequenceEqual(actual.Shape)) return $"tensor '{reference.Name}': libtorch shape differs";
            }
        }
        return null;
    }
}
