using Microsoft.ML.ModelMerging.Runtime;
using Spectre.Console;

namespace Microsoft.ML.ModelMerging.Cli;

/// <summary>
/// Shows a live progress bar for long library calls when writing to an interactive terminal; when the output is redirected
/// (logs, tests) it stays quiet and the command prints its own summary.
/// </summary>
internal static class ConsoleProgress
{
    public static TResult Run<TProgress, TResult>(TextWriter output, string title,
        Func<TProgress, (string Description, long Done, long Total)> describe, Func<IProgress<TProgress>?, TResult> work)
    {
        bool console = ReferenceEquals(output, Console.Out);
        if (!console) return work(null);
        if (Console.IsOutputRedirected) return work(new SynchronousProgress<TProgress>(LogLines(output, describe)));
        TResult result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(title);
                result = work(new SynchronousProgress<TProgress>(p =>
                {
                    var (description, done, total) = describe(p);
                    task.Description = description;
                    task.MaxValue = Math.Max(1, total);
                    task.Value = done;
                }));
                task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>
    /// For logs: one line when the stage changes and at every tenth of it. Descriptions that differ only in their numbers
    /// ("epoch 3", "epoch 4") are one stage, so a 200-epoch probe logs ten lines, not two hundred.
    /// </summary>
    private static Action<TProgress> LogLines<TProgress>(TextWriter output, Func<TProgress, (string Description, long Done, long Total)> describe)
    {
        string last = "";
        long lastTenth = -1;
        return p =>
        {
            var (description, done, total) = describe(p);
            string stage = new string([.. description.Where(c => !char.IsAsciiDigit(c))]);
            long tenth = total > 0 ? 10 * done / total : 0;
            if (stage == last && tenth == lastTenth) return;
            last = stage;
            lastTenth = tenth;
            output.WriteLine($"{DateTime.Now:HH:mm:ss} {description} {done}/{total}");
            output.Flush();
        };
    }
}
