namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// One image classification task of the benchmark: what it is, where its images come from, and how to build its
/// fixed splits. Pixels are in [0, 1]; the default tasks are 32×32 RGB, the far zoo's 28×28 grayscale.
/// </summary>
public sealed class BenchmarkTask
{
    private readonly Func<BenchmarkSources, int, TaskSplits> build;

    internal BenchmarkTask(
        string name, string source, string description, IReadOnlyList<string> classNames, SplitSizes sizes,
        IReadOnlyList<string>? characters, Func<BenchmarkSources, int, TaskSplits> build)
    {
        Name = name;
        Source = source;
        Description = description;
        ClassNames = classNames;
        Sizes = sizes;
        Characters = characters;
        this.build = build;
    }

    /// <summary>Short name used on the command line and in reports, e.g. <c>fashion-mnist</c>.</summary>
    public string Name { get; }

    /// <summary>The package the images come from.</summary>
    public string Source { get; }

    /// <summary>How the images and splits are made.</summary>
    public string Description { get; }

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The documented sizes of the splits; <see cref="Load"/> always returns exactly these.</summary>
    public SplitSizes Sizes { get; }

    /// <summary>For glyph tasks, the rendered character of each class; null for tasks of photographed or scanned images.</summary>
    public IReadOnlyList<string>? Characters { get; }

    /// <summary>Builds the task's splits; the same sources and seed give the same bytes. Takes seconds.</summary>
    /// <param name="sources">Where the raw data lives; <see cref="BenchmarkSources.Default"/> when null.</param>
    /// <param name="seed">Seed of the sampling (and rendering); the benchmark's fixed splits use 0.</param>
    public TaskSplits Load(BenchmarkSources? sources = null, int seed = 0)
    {
        TaskSplits splits = build(sources ?? BenchmarkSources.Default, DeriveSeed(seed, Name));
        if (splits.Sizes != Sizes)
        {
            throw new InvalidDataException($"Task '{Name}' built {splits.Sizes}, expected {Sizes}: its source data has changed.");
        }

        return splits;
    }

    /// <summary>Name, source, class count and split sizes, for logs.</summary>
    public override string ToString() => $"{Name} ({Source}): {ClassNames.Count} classes, {Sizes}";

    /// <summary>Mixes the task name into the seed (FNV-1a) so tasks built with one seed draw independent samples.</summary>
    internal static int DeriveSeed(int seed, string name)
    {
        uint hash = 2166136261;
        foreach (char c in name)
        {
            hash = (hash ^ c) * 16777619;
        }

        return unchecked((int)hash ^ seed);
    }
}
