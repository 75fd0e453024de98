using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// A LoRA adapter folder (PEFT layout) read as the expert checkpoint it stands for: every tensor is the base's, except
/// the weight of each adapted layer, W0 + ΔW, computed from the base tensor and the adapter's factors when the merge
/// reads it. Only the small factors and a few dense tensors are in memory at once.
/// </summary>
internal static class AdapterCheckpoint
{
    /// <summary>The expert at <paramref name="path"/>: an adapter folder densified against <paramref name="baseCheckpoint"/>, or any checkpoint as is.</summary>
    public static Checkpoint OpenExpert(string path, Checkpoint baseCheckpoint)
    {
        if (PeftAdapterFolder.IsAdapter(path)) return Open(path, baseCheckpoint);
        var checkpoint = Checkpoint.Open(path);
        // An adapter's weights read as a model lack every weight of the base: refused as what they are, not as missing
        // tensors (or, with --allow-missing, merged as an expert that changes nothing).
        if (checkpoint.Tensors.FirstOrDefault(t => t.Name.Contains(".lora_A.", StringComparison.Ordinal) || t.Name.Contains(".lora_B.", StringComparison.Ordinal)) is { } factor)
        {
            checkpoint.Dispose();
            string folder = Path.GetDirectoryName(Path.GetFullPath(Directory.Exists(path) ? Path.Combine(path, PeftAdapterFolder.WeightsFileName) : path))!;
            throw new CheckpointFormatException(path, factor.Name, File.Exists(Path.Combine(folder, PeftAdapterFolder.ConfigFileName))
                ? $"a LoRA factor: these are an adapter's weights, not a model; give the adapter folder {folder} as the expert."
                : $"a LoRA factor: these are an adapter's weights, not a model; an adapter expert is a PEFT folder with its {PeftAdapterFolder.ConfigFileName} (r, lora_alpha, target_modules) beside them.");
        }
        return checkpoint;
    }

    /// <summary>Opens an adapter folder against the base it was trained on (its shapes are checked against the base's config).</summary>
    public static Checkpoint Open(string adapterFolder, Checkpoint baseCheckpoint)
    {
        ArgumentNullException.ThrowIfNull(baseCheckpoint);
        var config = ModelCheckpoints.ReadConfig(baseCheckpoint.Source);
        MergedAdapterBase.Ensure(adapterFolder, baseCheckpoint.Source, "--base");
        var adapter = PeftAdapterFolder.Load(adapterFolder, config);
        try
        {
            var computed = adapter.Modules.Select(m => VisionTransformerNames.Weight(m.Target.Prefix)).ToList();
            foreach (var (name, module) in computed.Zip(adapter.Modules))
            {
                var entry = baseCheckpoint.Contains(name) ? baseCheckpoint.GetEntry(name)
                    : throw new CheckpointFormatException(baseCheckpoint.Source, name, $"the adapter {adapterFolder} adapts this layer, which the base lacks.");
                if (!entry.Shape.SequenceEqual([module.Target.OutFeatures, module.Target.InFeatures]))
                    throw new CheckpointFormatException(baseCheckpoint.Source, name,
                        $"shape {entry.ShapeText}, but the adapter {adapterFolder} is for a [{module.Target.OutFeatures}, {module.Target.InFeatures}] weight.");
            }

            float[] Dense(string name)
            {
                using var scope = NewDisposeScope();
                var w0 = baseCheckpoint.ReadTensor(name);
                var sum = w0.Plus(adapter.Delta(name[..^".weight".Length])).contiguous();
                return sum.data<float>().ToArray();
            }

            return Checkpoint.Derived(adapterFolder, baseCheckpoint, [Path.Combine(adapterFolder, PeftAdapterFolder.WeightsFileName)], computed, Dense, owned: adapter);
        }
        catch
        {
            adapter.Dispose();
            throw;
        }
    }
}
