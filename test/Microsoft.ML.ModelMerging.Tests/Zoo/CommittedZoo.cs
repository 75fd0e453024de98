using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

/// <summary>The zoos committed under <c>zoos/</c> at the repository root (built by `mlmerge zoo build`).</summary>
internal static class CommittedZoo
{
    /// <summary>
    /// The zoo the tests that use its task names (mnist, glyph-digits, ...) and recorded accuracies run on: the first zoo,
    /// kept as the far-fine-tuning stress case <c>zoos/far</c>.
    /// </summary>
    public static string Directory => Far;

    /// <summary><c>zoos/far</c>: 7 gray 28×28 tasks, experts fine-tuned far (<see cref="Microsoft.ML.ModelMerging.Zoo.ZooRecipe.Far"/>).</summary>
    public static string Far => Find("far", required: true)!;

    /// <summary><c>zoos/default</c>: the 8 RGB tasks of the default recipe; the test is inconclusive until it is committed.</summary>
    public static string Default => Find("default", required: false)
        ?? throw new AssertInconclusiveException("zoos/default is not committed yet: build it with `mlmerge zoo build --out zoos/default`");

    /// <summary><c>zoos/nonlocal</c>: the default tasks, experts fine-tuned from two differently seeded foundations (<see cref="Microsoft.ML.ModelMerging.Zoo.ZooRecipe.NonLocal"/>).</summary>
    public static string NonLocal => Find("nonlocal", required: true)!;

    private static string? Find(string name, bool required)
    {
        string root = BenchmarkSources.FindRepositoryRoot(AppContext.BaseDirectory)
            ?? throw new InvalidOperationException("tests run outside the repository");
        string zoo = Path.Combine(root, "zoos", name);
        bool exists = File.Exists(Path.Combine(zoo, PoolManifest.FileName));
        if (required) Assert.IsTrue(exists, $"the committed zoo is missing at {zoo}");
        return exists ? zoo : null;
    }
}
