using System.Globalization;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// <c>losses.csv</c> of the resumable adapt job: one row per step with the cumulative wall time, the learning
/// rate, the loss and every task's mean entropy. Opening it for a run resumed at step s keeps the rows up to s (the
/// rows of steps after the checkpoint are redone) and continues the time from there. Rows are flushed with every
/// checkpoint.
/// </summary>
internal sealed class AdaptationLossLog : IDisposable
{
    private readonly StreamWriter _writer;

    public AdaptationLossLog(string path, IReadOnlyList<string> tasks, int keepThroughStep)
    {
        string header = "step,seconds,learning_rate,loss," + string.Join(",", tasks.Select(t => "entropy:" + t));
        var kept = new List<string>();
        if (keepThroughStep > 0 && File.Exists(path))
        {
            var lines = File.ReadAllLines(path);
            if (lines.Length > 0 && lines[0] == header)
            {
                foreach (string line in lines.Skip(1))
                {
                    // A row cut short by a kill (e.g. "1e-") ends what is kept, like a row past the checkpoint.
                    string[] fields = line.Split(',');
                    if (fields.Length < 4 || !int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out int step) || step > keepThroughStep
                        || !double.TryParse(fields[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)
                        || !double.TryParse(fields[3], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss))
                    {
                        break;
                    }

                    kept.Add(line);
                    PreviousSeconds = seconds;
                    LastLoss = loss;
                }
            }
        }

        // The kept rows go to a new file renamed over the old one, so a kill while they are rewritten loses no history.
        string temporary = path + ".partial";
        File.WriteAllLines(temporary, [header, .. kept]);
        File.Move(temporary, path, overwrite: true);
        _writer = new StreamWriter(path, append: true);
    }

    /// <summary>Wall time recorded at the last kept row: the time spent by earlier invocations.</summary>
    public double PreviousSeconds { get; }

    /// <summary>Loss of the last row written (or kept); null when there is none.</summary>
    public double? LastLoss { get; private set; }

    public void Append(AdaptationProgress progress, double seconds)
    {
        var inv = CultureInfo.InvariantCulture;
        _writer.WriteLine(string.Join(",", new[]
        {
            progress.Step.ToString(inv), seconds.ToString("F3", inv), progress.LearningRate.ToString("R", inv), progress.Loss.ToString("R", inv),
        }.Concat(progress.TaskEntropies.Select(e => e.ToString("R", inv)))));
        LastLoss = progress.Loss;
        if (progress.CheckpointWritten)
        {
            _writer.Flush();
        }
    }

    public void Dispose() => _writer.Dispose();
}
