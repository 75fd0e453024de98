using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

/// <summary>The zoo committed at the repository root (built by `mlmerge zoo build`).</summary>
internal static class CommittedZoo
{
    public static string Directory
    {
        get
        {
            string root = BenchmarkSources.FindRepositoryRoot(AppContext.BaseDirectory)
                ?? throw new InvalidOperationException("tests run outside the repository");
            string zoo = Path.Combine(root, "zoo");
            Assert.IsTrue(File.Exists(Path.Combine(zoo, PoolManifest.FileName)), $"the committed zoo is missing at {zoo}");
            return zoo;
        }
    }
}
