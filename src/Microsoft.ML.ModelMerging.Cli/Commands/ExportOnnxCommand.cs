using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Onnx;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge export-onnx --model &lt;backbone&gt; --head &lt;task&gt;=&lt;head.safetensors&gt; [--head ...] --out model.onnx [--fp16]</c>:
/// one ONNX model with input <c>pixels</c> and one <c>scores_&lt;task&gt;</c> output per head.
/// </summary>
internal static class ExportOnnxCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Backbone checkpoint (.safetensors file, sharded index or directory; ours or Hugging Face CLIP with config.json)." };
        var heads = new Option<string[]>("--head") { Description = "A task head as <task>=<head.safetensors> (repeat for each task; outputs follow this order)." };
        var output = new Option<string?>("--out") { Description = "Output .onnx file (written to a temporary name, then renamed)." };
        var fp16 = new Option<bool>("--fp16") { Description = "Store weight matrices as float16 (half the size; computation stays float32)." };
        var scores = new Option<string>("--scores") { Description = "What scores_<task> holds: probabilities (softmax, default) | logits.", DefaultValueFactory = _ => "probabilities" };
        var noFeatures = new Option<bool>("--no-features") { Description = "Leave out the 'features' output." };
        var command = new Command("export-onnx", "Export a Vision Transformer checkpoint and its task heads as one ONNX model.")
        {
            model, heads, output, fp16, scores, noFeatures,
        };
        command.SetAction(parse =>
        {
            var options = new VitOnnxExportOptions
            {
                WeightPrecision = parse.GetValue(fp16) ? OnnxWeightPrecision.Float16 : OnnxWeightPrecision.Float32,
                Scores = parse.GetValue(scores)!.Trim().ToLowerInvariant() switch
                {
                    "probabilities" => OnnxScoreKind.Probabilities,
                    "logits" => OnnxScoreKind.Logits,
                    var other => throw new ArgumentException($"--scores must be 'probabilities' or 'logits' (got '{other}')."),
                },
                IncludeFeatures = !parse.GetValue(noFeatures),
            };
            var result = VitOnnxExport.Save(
                parse.GetValue(model) ?? throw new ArgumentException("--model is required."),
                (parse.GetValue(heads) ?? []).Select(HeadCheckpoint.Parse).ToList(),
                parse.GetValue(output) ?? throw new ArgumentException("--out is required."),
                options);
            parse.InvocationConfiguration.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"exported {result.Tasks.Count} task(s) ({string.Join(", ", result.Tasks)}), {result.Nodes} nodes, {result.Bytes:N0} bytes → {result.OutputPath}"));
            return 0;
        });
        return command;
    }
}
