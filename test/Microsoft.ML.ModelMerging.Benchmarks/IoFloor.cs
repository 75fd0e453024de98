using Microsoft.ML.ModelMerging.Checkpoints;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// The least any streaming merge must do: read every input tensor once and write an output of the base's size once
/// (through the same checkpoint reader and writer, including the final flush to disk). Reads go into one reused
/// buffer, so this also shows the memory floor of the process. With <c>reads</c> = 2, every input is read once more
/// before the output is written: the least a merge needing a model-wide statistic before its merge pass must do.
/// </summary>
internal static class IoFloor
{
    private const int ChunkBytes = 1 << 30;

    public static void Run(IReadOnlyList<string> inputs, string output, int reads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(reads, 1);
        var checkpoints = inputs.Select(Checkpoint.Open).ToList();
        try
        {
            var plan = checkpoints[0].Tensors.Select(t => new TensorSpec(t.Name, t.DType, t.Shape)).ToList();
            long largest = plan.Count == 0 ? 0 : plan.Max(t => t.ByteLength);
            var buffer = new byte[Math.Min(largest, ChunkBytes)];
            using var writer = new CheckpointWriter(output, plan);
            for (int pass = 1; pass < reads; pass++)
            {
                foreach (var entry in checkpoints[0].Tensors)
                {
                    for (long offset = 0; offset < entry.ByteLength; offset += buffer.Length)
                    {
                        var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, entry.ByteLength - offset));
                        foreach (var checkpoint in checkpoints) checkpoint.ReadBytes(entry.Name, offset, chunk);
                    }
                }
            }

            foreach (var entry in checkpoints[0].Tensors)
            {
                // Tensors up to 1 GiB (all of the benchmark's) are read whole; larger ones in chunks, written from the base.
                for (long offset = 0; offset < entry.ByteLength; offset += buffer.Length)
                {
                    var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, entry.ByteLength - offset));
                    for (int i = checkpoints.Count - 1; i >= 0; i--) checkpoints[i].ReadBytes(entry.Name, offset, chunk);
                    if (entry.ByteLength <= buffer.Length) writer.WriteBytes(chunk);
                }
                if (entry.ByteLength > buffer.Length) writer.WriteBytes(checkpoints[0].ReadBytes(entry.Name));
            }
            writer.Complete();
        }
        finally
        {
            foreach (var c in checkpoints) c.Dispose();
        }
    }
}
