using System.Diagnostics;
using System.Globalization;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>Runs a command under GNU time (Debian package <c>time</c>): wall time, peak resident set size, CPU times.</summary>
internal sealed record ProcessMeasurement(double Seconds, long PeakRssKiB, double UserSeconds, double SystemSeconds, int ExitCode, string Output)
{
    public const string GnuTime = "/usr/bin/time";

    public double PeakRssMiB => PeakRssKiB / 1024.0;

    public static ProcessMeasurement Run(string fileName, IEnumerable<string> arguments)
    {
        if (!File.Exists(GnuTime)) throw new InvalidOperationException($"{GnuTime} not found: install the Debian package 'time' (build.sh does).");
        string timeFile = Path.GetTempFileName();
        try
        {
            var start = new ProcessStartInfo(GnuTime) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-f", "%e %M %U %S", "-o", timeFile, fileName }.Concat(arguments)) start.ArgumentList.Add(a);
            using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {GnuTime}");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            process.WaitForExit();
            // GNU time prints "Command exited with non-zero status N" before the format line when the command fails.
            var fields = File.ReadAllText(timeFile).Trim().Split('\n').Last().Split(' ');
            double Number(int i) => double.Parse(fields[i], CultureInfo.InvariantCulture);
            return new ProcessMeasurement(Number(0), long.Parse(fields[1], CultureInfo.InvariantCulture), Number(2), Number(3),
                process.ExitCode, stdout.Result + stderr.Result);
        }
        finally
        {
            File.Delete(timeFile);
        }
    }
}
