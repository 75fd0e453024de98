using System.CommandLine;
using System.CommandLine.Help;
using System.Runtime.InteropServices;
using Microsoft.ML.ModelMerging.Cli.Commands;

namespace Microsoft.ML.ModelMerging.Cli;

/// <summary>The root of the <c>mlmerge</c> command; each verb lives in its own file and only calls the library.</summary>
public static class MlmergeCommand
{
    public static RootCommand Build()
    {
        var root = new RootCommand("mlmerge: merge fine-tuned models into one multi-task model.")
        {
            InspectCommand.Create(),
            MergeCommand.Create(),
            ZooCommand.Create(),
            EvalCommand.Create(),
            FinetuneCommand.Create(),
            ExportOnnxCommand.Create(),
            AdaptCommand.Create(),
            CompareCommand.Create(),
            PoolCommand.Create(),
            AlignCommand.Create(),
        };
        return root;
    }

    /// <summary>Runs the command line, writing to the given writers (tests pass their own).</summary>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null)
    {
        var parse = Build().Parse(args);
        var config = new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error, EnableDefaultExceptionHandler = false };
        if (parse.Errors.Count > 0 && parse.Action is not HelpAction)
        {
            // Unknown options, unparsable values: one line, like every other user error, instead of the full help.
            string command = string.Join(" ", parse.CommandResult.Command.Name == parse.RootCommandResult.Command.Name
                ? ["mlmerge"] : new[] { "mlmerge", parse.CommandResult.Command.Name });
            config.Error.WriteLine($"error: {string.Join(" ", parse.Errors.Select(e => e.Message))} (see '{command} --help')");
            return 1;
        }

        // SIGINT (Ctrl+C) and SIGTERM cancel the running command through its token, so temporary files are removed on the
        // way out; a second signal is left to its default action and ends the process at once. A repeat within two seconds
        // is the same request delivered twice (`timeout -s INT` signals the process and then its group), not a second one.
        config.ProcessTerminationTimeout = null;
        using var cancellation = new CancellationTokenSource();
        PosixSignal? received = null;
        var sinceFirst = new System.Diagnostics.Stopwatch();
        void Cancel(PosixSignalContext context)
        {
            if (received is not null)
            {
                if (sinceFirst.Elapsed < TimeSpan.FromSeconds(2)) context.Cancel = true;
                return;
            }

            received = context.Signal;
            sinceFirst.Start();
            context.Cancel = true;
            cancellation.Cancel();
        }
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Cancel);
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Cancel);
        try
        {
            return parse.InvokeAsync(config, cancellation.Token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException e) when (received is { } signal)
        {
            config.Error.WriteLine(e is StoppedWithResultsException kept
                ? $"error: cancelled by {signal}; {kept.Message}"
                : $"error: cancelled by {signal}; nothing was written under the output name and temporary files were removed.");
            return SignalExitCode(signal);
        }
        catch (Exception e) when (IsUserError(e))
        {
            // Bad input is reported as one clear line, not a stack trace.
            config.Error.WriteLine($"error: {UserMessage(e)}");
            return 1;
        }
    }

    /// <summary>The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).</summary>
    private static int SignalExitCode(PosixSignal signal) => signal == PosixSignal.SIGINT ? 130 : 143;

    /// <summary>
    /// The message without .NET's " (Parameter 'x')" suffix and "Actual value was" line, which name a C# parameter rather
    /// than anything the user typed; the message itself names the option, tensor or file.
    /// </summary>
    internal static string UserMessage(Exception e)
    {
        if (e is not ArgumentException { ParamName: { } name } argument) return e.Message;
        string message = argument.Message;
        int actual = message.IndexOf(Environment.NewLine + "Actual value was", StringComparison.Ordinal);
        if (actual >= 0) message = message[..actual];
        return message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal);
    }

    private static bool IsUserError(Exception e) =>
        e is IOException or ArgumentException or InvalidOperationException or Checkpoints.CheckpointFormatException or Merging.MergeInputException or OperationCanceledException or InvalidDataException or UnauthorizedAccessException;

    /// <summary>A path as it can be pasted into a shell: quoted when it holds spaces or quotes.</summary>
    internal static string Quote(string path)
    {
        if (path.Length > 0 && path.All(c => char.IsLetterOrDigit(c) || c is '/' or '\\' or '.' or '-' or '_' or ':' or '+' or ',' or '=' or '@')) return path;
        return OperatingSystem.IsWindows() ? "\"" + path.Replace("\"", "\\\"", StringComparison.Ordinal) + "\"" : "'" + path.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }
}

/// <summary>A command stopped by a signal that keeps what it finished (a resumable checkpoint, a partial leaderboard); the message says where.</summary>
internal sealed class StoppedWithResultsException(string message) : OperationCanceledException(message);
