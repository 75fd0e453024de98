using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Writes a base checkpoint and fine-tuned-like experts (base + small seeded noise) of a given size, tensor by tensor,
/// so benchmarks can merge models far larger than the process is allowed to hold.
/// </summary>
internal static class RandomCheckpoints
{
    public static IReadOnlyList<TensorSpec> Plan(long totalBytes, long rows = 4096, long columns = 1024)
    {
        long perTensor = rows * columns * 4;
        int count = (int)Math.Max(1, (totalBytes + perTensor - 1) / perTensor);
        var plan = new List<TensorSpec>();
        for (int i = 0; i < count; i++)
        {
            plan.Add(new TensorSpec($"layers.{i:D4}.weight", SafeTensorsDType.F32, new[] { rows, columns }));
            plan.Add(new TensorSpec($"layers.{i:D4}.bias", SafeTensorsDType.F32, new[] { rows }));
        }
        return plan.OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// The tensors of Hugging Face's <c>openai/clip-vit-base-patch32</c> vision tower (CLIPVisionModelWithProjection):
    /// 87.8M parameters, the largest tensor an MLP matrix of 3072×768 (9 MiB).
    /// </summary>
    public static IReadOnlyList<TensorSpec> ClipVitB32Plan()
    {
        const long width = 768, mlp = 3072;
        var plan = new List<TensorSpec>();
        void Add(string name, params long[] shape) => plan.Add(new TensorSpec(name, SafeTensorsDType.F32, shape));
        Add("vision_model.embeddings.class_embedding", width);
        Add("vision_model.embeddings.patch_embedding.weight", width, 3, 32, 32);
        Add("vision_model.embeddings.position_embedding.weight", 50, width);
        Add("vision_model.pre_layrnorm.weight", width);
        Add("vision_model.pre_layrnorm.bias", width);
        for (int layer = 0; layer < 12; layer++)
        {
            string prefix = $"vision_model.encoder.layers.{layer}.";
            foreach (string projection in new[] { "q_proj", "k_proj", "v_proj", "out_proj" })
            {
                Add(prefix + $"self_attn.{projection}.weight", width, width);
                Add(prefix + $"self_attn.{projection}.bias", width);
            }
            foreach (string norm in new[] { "layer_norm1", "layer_norm2" })
            {
                Add(prefix + norm + ".weight", width);
                Add(prefix + norm + ".bias", width);
            }
            Add(prefix + "mlp.fc1.weight", mlp, width);
            Add(prefix + "mlp.fc1.bias", mlp);
            Add(prefix + "mlp.fc2.weight", width, mlp);
            Add(prefix + "mlp.fc2.bias", width);
        }
        Add("vision_model.post_layernorm.weight", width);
        Add("vision_model.post_layernorm.bias", width);
        Add("visual_projection.weight", 512, width);
        return plan.OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>Expert -1 is the base; expert e adds N(0, 0.01²) noise drawn from a generator seeded by (e, tensor).</summary>
    public static void Write(string path, IReadOnlyList<TensorSpec> plan, int expert)
    {
        if (File.Exists(path)) return;
        using var writer = new CheckpointWriter(path, plan, new Dictionary<string, string> { ["benchmark.expert"] = expert.ToString() });
        for (int i = 0; i < plan.Count; i++)
        {
            using var scope = torch.NewDisposeScope();
            var baseGenerator = new torch.Generator((ulong)(1000 + i));
            var tensor = torch.randn(plan[i].Shape, generator: baseGenerator) * 0.02;
            if (expert >= 0)
            {
                var noise = new torch.Generator((ulong)(1_000_000 * (expert + 1) + i));
                tensor += torch.randn(plan[i].Shape, generator: noise) * 0.01;
            }
            writer.Write(tensor);
        }
        writer.Complete();
    }
}
