using System.CommandLine;
using System.CommandLine.Help;
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

        try
        {
            return parse.Invoke(config);
        }
        catch (Exception e) when (IsUserError(e))
        {
            // Bad input is reported as one clear line, not a stack trace.
            config.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static bool IsUserError(Exception e) =>
        e is IOException or ArgumentException or InvalidOperationException or Checkpoints.CheckpointFormatException or Merging.MergeInputException or OperationCanceledException or InvalidDataException or UnauthorizedAccessException;
}
