using System.CommandLine;

namespace Microsoft.ML.ModelMerging.Cli;

/// <summary>The root of the <c>mlmerge</c> command; each verb lives in its own file and only calls the library.</summary>
public static class MlmergeCommand
{
    public static RootCommand Build()
    {
        var root = new RootCommand("mlmerge: merge fine-tuned models into one multi-task model.");
        return root;
    }

    /// <summary>Runs the command line, writing to the given writers (tests pass their own).</summary>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null)
    {
        var parse = Build().Parse(args);
        var config = new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error };
        return parse.Invoke(config);
    }
}
