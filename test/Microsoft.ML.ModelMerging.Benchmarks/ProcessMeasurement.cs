using System.Diagnostics;
using System.Globalization;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>Runs a command under GNU time to get its wall time and peak resident set size.</summary>
internal sealed record ProcessMeasurement(double Seconds, long PeakRssKiB, int ExitCode, string Output)
{
    public static ProcessMeasurement Run(string fileName, IEnumerable<string> arguments)
    {
        string timeFile = Path.GetTempFileName();
        var start = new ProcessStartInfo("/usr/bin/time") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-f", "%e %M", "-o", timeFile, fileName }.Concat(arguments)) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start /usr/bin/time (Debian package 'time')");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        var fields = File.ReadAllText(timeFile).Trim().Split('\n').Last().Split(' ');
        File.Delete(timeFile);
        return new ProcessMeasurement(double.Parse(fields[0], CultureInfo.InvariantCulture), long.Parse(fields[1], CultureInfo.InvariantCulture),
            process.ExitCode, stdout.Result + stderr.Result);
    }
}
