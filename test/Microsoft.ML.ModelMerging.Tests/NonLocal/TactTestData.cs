using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// What the TACT tests share: two tasks of the committed zoo, their real test images (loaded once per test run), short
/// settings (few images per task), and a copy of the zoo without its pre-trained base.
/// </summary>
internal static class TactTestData
{
    /// <summary>Two of the committed zoo's tasks whose data loads fastest: a CSV of digits and rendered letters.</summary>
    public static readonly string[] TwoTasks = ["optical-digits", "glyph-letters"];

    /// <summary>Images per task the corrections are measured on: few, so every run takes a fraction of a second.</summary>
    public const int Examples = 64;

    private static readonly Lock s_lock = new();
    private static Dictionary<string, float[][]>? s_images;

    /// <summary>TACT's parameters with <see cref="Examples"/> images per task and <paramref name="more"/> (name=value).</summary>
    public static MergeParameters Parameters(params string[] more) => MergeParameters.Parse(["examples=" + Examples, .. more]);

    /// <summary>The first <paramref name="count"/> test images of <paramref name="task"/>, C·H·W values in [0, 1] each.</summary>
    public static float[][] Images(string task, int count)
    {
        lock (s_lock)
        {
            if (s_images is null)
            {
                using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
                // Enough images for every test: 2 × Examples for fitting, the rest for scoring.
                s_images = TwoTasks.ToDictionary(t => t, t => MLNet.MlNetTestData.Images(pool.LoadData(t).Test, 4 * Examples), StringComparer.Ordinal);
            }

            Assert.IsLessThanOrEqualTo(s_images[task].Length, count, "TactTestData loads this many images per task");
            return s_images[task].Take(count).ToArray();
        }
    }

    /// <summary>Images as a [N, C, H, W] tensor.</summary>
    public static Tensor Tensor(ExpertPool pool, IReadOnlyList<float[]> images) =>
        tensor(images.SelectMany(p => p).ToArray(), [images.Count, pool.Config.Channels, pool.Config.ImageSize, pool.Config.ImageSize]);

    /// <summary>
    /// Unlabeled images of every task of <paramref name="tasks"/> for <see cref="AlgorithmContext.Images"/>: images
    /// [<paramref name="skip"/>, <paramref name="skip"/> + <paramref name="count"/>) of its test split, in task order.
    /// </summary>
    public static UnlabeledImages Unlabeled(ExpertPool pool, IReadOnlyList<string> tasks, int count = Examples, int skip = 0)
    {
        var byTask = tasks.ToDictionary(t => t, t => Tensor(pool, Images(t, skip + count).Skip(skip).ToArray()), StringComparer.Ordinal);
        return new UnlabeledImages(cat(byTask.Values.ToArray(), 0), byTask);
    }

    /// <summary>Softmax probabilities of a model's logits, one array per image.</summary>
    public static float[][] Probabilities(MultiTaskModel model, string task, Tensor images)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return Rows(softmax(model.Logits(task, images), 1));
    }

    /// <summary>Rows of a [N, K] tensor.</summary>
    public static float[][] Rows(Tensor matrix) =>
        Enumerable.Range(0, (int)matrix.shape[0]).Select(i => matrix[i].to_type(ScalarType.Float32).cpu().data<float>().ToArray()).ToArray();

    /// <summary>
    /// A copy of the committed zoo's <paramref name="tasks"/> (experts, heads, the manifest's records and data sources) whose
    /// manifest has no pre-trained base: experts that share no foundation, as a non-local pool may have.
    /// </summary>
    public static string WriteBaselessPool(string directory, IReadOnlyList<string> tasks)
    {
        string zoo = CommittedZoo.Directory;
        var manifest = PoolManifest.Read(zoo);
        var kept = tasks.Select(manifest.Task).ToList();
        Directory.CreateDirectory(directory);
        foreach (var task in kept)
        {
            foreach (string file in new[] { task.Expert, task.Head })
            {
                string target = Path.Combine(directory, file);
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(Path.Combine(zoo, file), target);
            }
        }

        // Without the recipe hash the pool has an identity of its own; the recipe stays, for the seed its tasks' data is drawn with.
        (manifest with { Pretrained = null, RecipeHash = null, Tasks = kept }).Write(directory);
        Assert.IsFalse(File.Exists(Path.Combine(directory, PoolManifest.PretrainedFileName)));
        return directory;
    }
}
