using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

/// <summary>Small pools made from the committed zoo for the alignment tests, and the logits they are compared by.</summary>
internal static class AlignmentTestPools
{
    /// <summary>Some tasks of zoos/far as a pool of their own, pointing at the zoo's files (absolute paths).</summary>
    public static string Subset(string directory, params string[] tasks)
    {
        var far = PoolManifest.Read(CommittedZoo.Far);
        var manifest = far with
        {
            Pretrained = Path.Combine(CommittedZoo.Far, far.Pretrained!),
            Tasks = [.. tasks.Select(far.Task).Select(t => t with { Expert = Path.Combine(CommittedZoo.Far, t.Expert), Head = Path.Combine(CommittedZoo.Far, t.Head) })],
        };
        Directory.CreateDirectory(directory);
        manifest.Write(directory);
        return directory;
    }

    /// <summary>
    /// A non-local pool of two tasks: <paramref name="first"/> fine-tuned from the zoo's pre-trained model, and
    /// <paramref name="second"/> from a second foundation that is that model with its units randomly reordered (its expert
    /// and head reordered alike: the same functions, as a differently seeded foundation would not be, but with a known answer).
    /// </summary>
    public static string NonLocal(string directory, string first, string second, PermutationSet permutation)
    {
        var far = PoolManifest.Read(CommittedZoo.Far);
        var spec = VisionTransformerPermutations.Spec(far.ModelConfig);
        Directory.CreateDirectory(directory);
        using (var pretrained = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.Far, far.Pretrained!)))
        {
            Save(Path.Combine(directory, "foundation-b.safetensors"), far.ModelConfig, permutation.Apply(spec, pretrained.Weights));
        }

        var b = far.Task(second);
        using (var expert = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.Far, b.Expert)))
        {
            Save(Path.Combine(directory, "expert-b.safetensors"), far.ModelConfig, permutation.Apply(spec, expert.Weights));
        }

        using (var head = ModelCheckpoints.LoadHead(Path.Combine(CommittedZoo.Far, b.Head)))
        using (var moved = permutation.Apply(head, VisionTransformerPermutations.HeadFeatures(far.ModelConfig)))
        {
            ModelCheckpoints.SaveHead(Path.Combine(directory, "head-b.safetensors"), moved, task: second);
        }

        var a = far.Task(first);
        var manifest = far with
        {
            Pretrained = null,
            Tasks =
            [
                a with { Expert = Path.Combine(CommittedZoo.Far, a.Expert), Head = Path.Combine(CommittedZoo.Far, a.Head), Foundation = Path.Combine(CommittedZoo.Far, far.Pretrained!) },
                b with { Expert = "expert-b.safetensors", Head = "head-b.safetensors", Foundation = "foundation-b.safetensors" },
            ],
        };
        manifest.Write(directory);
        return directory;
    }

    /// <summary>Logits of a backbone with a head on images.</summary>
    public static Tensor Logits(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, ClassificationHead head, Tensor images) =>
        head.Forward(VisionTransformer.Forward(config, weights, images));

    /// <summary>The first <paramref name="count"/> test images of a task.</summary>
    public static Tensor TestImages(ExpertPool pool, string task, int count) =>
        pool.LoadData(task).Test.ToTensor().narrow(0, 0, count);

    private static void Save(string path, VisionTransformerConfig config, Dictionary<string, Tensor> weights)
    {
        ModelCheckpoints.SaveBackbone(path, config, weights);
        foreach (var t in weights.Values) t.Dispose();
    }
}
