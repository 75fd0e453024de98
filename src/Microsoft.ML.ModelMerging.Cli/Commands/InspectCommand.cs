using System.CommandLine;
using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary><c>mlmerge inspect &lt;checkpoint&gt; [--json]</c>: tensors, dtypes, shapes, parameter count and metadata.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var checkpoint = new Argument<string>("checkpoint") { Description = "A .safetensors file, a model.safetensors.index.json, or a directory holding either." };
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table." };
        var command = new Command("inspect", "List a checkpoint's tensors, dtypes, shapes, parameter count and metadata.") { checkpoint, json };
        command.SetAction(parse =>
        {
            var summary = CheckpointSummary.Read(parse.GetValue(checkpoint)!);
            parse.InvocationConfiguration.Output.Write(parse.GetValue(json) ? summary.ToJson() + Environment.NewLine : summary.ToText());
            return 0;
        });
        return command;
    }
}
