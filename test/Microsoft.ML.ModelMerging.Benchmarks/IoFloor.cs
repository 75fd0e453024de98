using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// The least any streaming merge must do: read every input tensor once and write an output of the base's size once.
/// Reads go into one reused buffer, so this also shows the memory floor.
/// </summary>
internal static class IoFloor
{
    public static void Run(IReadOnlyList<string> inputs, string output)
    {
        var checkpoints = inputs.Select(Checkpoint.Open).ToList();
        try
        {
            var plan = checkpoints[0].Tensors.Select(t => new TensorSpec(t.Name, t.DType, t.Shape)).ToList();
            using var writer = new CheckpointWriter(output, plan);
            foreach (var entry in checkpoints[0].Tensors)
            {
                byte[] last = Array.Empty<byte>();
                foreach (var checkpoint in checkpoints) last = checkpoint.ReadBytes(entry.Name);
                writer.WriteBytes(last);
            }
            writer.Complete();
        }
        finally
        {
            foreach (var c in checkpoints) c.Dispose();
        }
    }
}
