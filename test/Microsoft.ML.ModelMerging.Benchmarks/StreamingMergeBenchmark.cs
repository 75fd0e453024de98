using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// <c>streaming-merge</c>: a base and N experts of at least G GiB each (generated once, reused), the I/O floor (read every
/// input once, write the output once) and <c>mlmerge merge</c> with task arithmetic and TIES, each a child process under
/// GNU time. Reports wall time as a ratio to the floor measured in the same run, and peak RSS.
/// </summary>
internal static class StreamingMergeBenchmark
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static int Run(BenchmarkArguments arguments)
    {
        double expertGiB = arguments.GetNumber("expert-gib", 1);
        int expertCount = (int)arguments.GetNumber("experts", 4);
        int repeat = (int)arguments.GetNumber("repeat", 1);
        string[] methods = (arguments.Get("methods") ?? "task-arithmetic,ties").Split(',', StringSplitOptions.RemoveEmptyEntries);
        string work = Path.GetFullPath(arguments.Get("work") ?? Path.Combine(Path.GetTempPath(), "mlmerge-streaming-benchmark"));
        bool clip = arguments.Get("shape") == "clip-vit-b32";
        string inputs = Path.Combine(work, clip ? $"clip-vit-b32-{expertCount}experts" : string.Create(Invariant, $"{expertGiB}gib-{expertCount}experts"));
        Directory.CreateDirectory(inputs);

        // 1. Inputs: tensors of 4096×1024 float32 (16 MiB) and their biases, at least G GiB per checkpoint.
        // Or --shape clip-vit-b32: the tensors of Hugging Face's CLIP ViT-B/32 vision tower.
        var plan = clip ? RandomCheckpoints.ClipVitB32Plan() : RandomCheckpoints.Plan((long)(expertGiB * (1L << 30)));
        string basePath = Path.Combine(inputs, "base.safetensors");
        var expertPaths = Enumerable.Range(0, expertCount).Select(i => Path.Combine(inputs, $"expert{i}.safetensors")).ToList();
        var generation = Stopwatch.StartNew();
        RandomCheckpoints.Write(basePath, plan, -1);
        for (int i = 0; i < expertCount; i++) RandomCheckpoints.Write(expertPaths[i], plan, i);
        long checkpointBytes = new FileInfo(basePath).Length;
        Log($"inputs: base + {expertCount} experts of {checkpointBytes / (double)(1L << 30):F3} GiB ({plan.Count} tensors) in {inputs} (ready in {generation.Elapsed.TotalSeconds:F0} s)");
        if (arguments.Has("prepare-only")) return 0;

        // 2. Hot page cache: read every input once so every measured run starts from the same state, and no run pays for
        // writing back what an earlier step left dirty (freshly generated inputs, the previous run's output).
        var warm = Stopwatch.StartNew();
        var buffer = new byte[16 << 20];
        foreach (string path in expertPaths.Prepend(basePath))
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            while (stream.Read(buffer) > 0)
            {
            }
        }
        Log($"warm-up read of {(expertCount + 1) * checkpointBytes / (double)(1L << 30):F2} GiB: {warm.Elapsed.TotalSeconds:F2} s");

        string benchmarkDll = Path.Combine(AppContext.BaseDirectory, "Microsoft.ML.ModelMerging.Benchmarks.dll");
        string mlmergeDll = Path.Combine(AppContext.BaseDirectory, "mlmerge.dll");
        string output = Path.Combine(work, "merged.safetensors");
        var expertArgs = expertPaths.SelectMany(p => new[] { "--expert", p }).ToList();
        var runs = new Dictionary<string, List<ProcessMeasurement>>(StringComparer.Ordinal);
        // The floor reads every input once; TIES with its exact global trim must read them twice, so its own floor is shown too.
        var rows = new List<string> { "floor", "floor-2-reads" };
        rows.AddRange(methods);

        string loadBefore = LoadAverage();

        // 3. Floor, then each method, as child processes; R rounds, medians reported.
        for (int round = 0; round < repeat; round++)
        {
            foreach (string row in rows)
            {
                var arguments2 = row.StartsWith("floor", StringComparison.Ordinal)
                    ? new List<string> { benchmarkDll, "io-floor", "--reads", row == "floor" ? "1" : "2", "--out", output, basePath }.Concat(expertPaths)
                    : new List<string> { mlmergeDll, "merge" }.Concat(MethodArguments(row)).Concat(["--base", basePath]).Concat(expertArgs).Concat(["--out", output]);
                SyncDisks();
                var measurement = ProcessMeasurement.Run("dotnet", arguments2);
                File.Delete(output);
                if (measurement.ExitCode != 0)
                {
                    Console.Error.WriteLine($"{row} failed with exit code {measurement.ExitCode}:{Environment.NewLine}{measurement.Output}");
                    return 1;
                }

                Log($"round {round + 1}/{repeat} {row}: {measurement.Seconds:F2} s wall, {measurement.PeakRssMiB:F0} MiB peak RSS, " +
                    $"{measurement.UserSeconds:F2} s user, {measurement.SystemSeconds:F2} s system");
                (runs.TryGetValue(row, out var list) ? list : runs[row] = []).Add(measurement);
            }
        }

        double floor = Median(runs["floor"].Select(m => m.Seconds));
        var table = new StringBuilder();
        table.AppendLine(string.Create(Invariant,
            $"{expertCount} experts + base of {checkpointBytes / (double)(1L << 30):F3} GiB each, float32; {repeat} round(s), medians; load average before: {loadBefore}"));
        table.AppendLine();
        double floorTwoReads = Median(runs["floor-2-reads"].Select(m => m.Seconds));
        double? taskArithmetic = runs.TryGetValue("task-arithmetic", out var ta) ? Median(ta.Select(m => m.Seconds)) : null;
        table.AppendLine("| run | wall s | ratio to floor | ratio to floor with 2 reads | ratio to task arithmetic | peak RSS MiB | user s | system s |");
        table.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (string row in rows)
        {
            var list = runs[row];
            double wall = Median(list.Select(m => m.Seconds));
            table.AppendLine(string.Create(Invariant,
                $"| {(row == "floor" ? "I/O floor" : row == "floor-2-reads" ? "I/O floor, inputs read twice" : row)} | {wall:F2} | {wall / floor:F2} | {wall / floorTwoReads:F2} | {(taskArithmetic is { } t ? (wall / t).ToString("F2", Invariant) : "")} | {list.Max(m => m.PeakRssMiB):F0} | {Median(list.Select(m => m.UserSeconds)):F2} | {Median(list.Select(m => m.SystemSeconds)):F2} |"));
        }

        Console.WriteLine();
        Console.Write(table);
        File.WriteAllText(Path.Combine(work, "results.md"), table.ToString());

        if (arguments.Has("clean"))
        {
            Directory.Delete(inputs, recursive: true);
            Log($"deleted {inputs}");
        }

        return 0;
    }

    /// <summary>A row of <c>--methods</c>: a method name, optionally with parameters, e.g. <c>dare:then=ties:trim=per-tensor</c>.</summary>
    private static IEnumerable<string> MethodArguments(string row)
    {
        var parts = row.Split(':');
        yield return "--method";
        yield return parts[0];
        foreach (string parameter in parts.Skip(1))
        {
            yield return "--param";
            yield return parameter;
        }
    }

    private static void SyncDisks()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false });
        sync?.WaitForExit();
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

    private static void Log(string message) => Console.WriteLine($"[{DateTime.Now:HH:mm:ss}] {message}");
}
