namespace Microsoft.ML.ModelMerging.Tests.Architecture;

/// <summary>The repository's root (the folder of <c>Microsoft.ML.ModelMerging.sln</c>), found above the test binaries.</summary>
internal static class RepositoryRoot
{
    public static string Path
    {
        get
        {
            var directory = new DirectoryInfo(AppContext.BaseDirectory);
            while (directory is not null && !File.Exists(System.IO.Path.Combine(directory.FullName, "Microsoft.ML.ModelMerging.sln"))) directory = directory.Parent;
            return directory?.FullName ?? throw new InvalidOperationException("The repository root (Microsoft.ML.ModelMerging.sln) is not above the test binaries.");
        }
    }
}
