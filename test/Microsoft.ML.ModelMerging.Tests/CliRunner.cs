using Microsoft.ML.ModelMerging.Cli;

namespace Microsoft.ML.ModelMerging.Tests;

/// <summary>Runs <c>mlmerge</c> in-process with captured output, as a user would from a shell.</summary>
internal static class CliRunner
{
    public static (int Exit, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = MlmergeCommand.Run(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }
}
