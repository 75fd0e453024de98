using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// <c>bench align-timing POOL</c>: weight matching where there is something to find. The pool's last expert is reordered
/// by a random permutation of every group (residual stream, MLP units, attention heads and their dimensions), a function-
/// preserving change, and matched to the first expert; reports the time against one forward pass of the same model and
/// whether the reordering was undone (the distance back to the unshuffled expert).
/// </summary>
internal static class AlignmentTiming
{
    public static int Run(string poolPath, int seed, int threads, int images)
    {
        set_num_threads(threads);
        var inv = CultureInfo.InvariantCulture;
        using var pool = ExpertPool.Load(poolPath);
        var names = pool.TaskNames;
        var spec = VisionTransformerPermutations.Spec(pool.Config);
        var reference = pool.Expert(names[0]);
        var other = pool.Expert(names[^1]);
        using var scope = NewDisposeScope();
        var shuffled = PermutationSet.Random(spec, seed).Apply(spec, other);

        // One forward pass of `images` random images through the same model: the unit the issue asks for.
        using var batch = rand(images, pool.Config.Channels, pool.Config.ImageSize, pool.Config.ImageSize);
        var forward = Stopwatch.StartNew();
        using (no_grad()) VisionTransformer.Forward(pool.Config, other, batch).Dispose();
        forward.Stop();

        var matching = Stopwatch.StartNew();
        var result = WeightMatching.Match(spec, reference, shuffled);
        matching.Stop();
        var aligned = result.Permutations.Apply(spec, shuffled);

        Console.WriteLine(string.Create(inv, $"{pool.Config.Width} wide, {pool.Config.Layers} blocks, MLP {pool.Config.MlpSize}, {spec.Groups.Count} permutation groups, {threads} libtorch thread(s), {DateTime.Now:yyyy-MM-dd}"));
        Console.WriteLine(string.Create(inv, $"L2 to {names[0]}: unshuffled {WeightDistance.L2(reference, other):F4}, shuffled {WeightDistance.L2(reference, shuffled):F4}, aligned {WeightDistance.L2(reference, aligned):F4}"));
        Console.WriteLine(string.Create(inv, $"L2 from the aligned model to the unshuffled expert: {WeightDistance.L2(other, aligned):E2} (0 when the reordering is undone exactly, as expected for experts that share a foundation)"));
        Console.WriteLine(string.Create(inv, $"weight matching: {matching.Elapsed.TotalSeconds:F1} s, {result.Iterations} passes, converged {result.Converged}; one forward pass of {images} images {forward.Elapsed.TotalSeconds:F2} s; ratio {matching.Elapsed.TotalSeconds / forward.Elapsed.TotalSeconds:F1}×"));
        return 0;
    }
}
