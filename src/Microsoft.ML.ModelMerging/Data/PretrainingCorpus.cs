namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The pre-training corpus: glyphs of <see cref="PretrainingVocabulary"/> (Greek, Cyrillic, Georgian and Hebrew
/// letters, arrows, operators, shapes, dingbats, ...) rendered from every installed font that has them. None of them
/// is a benchmark character or looks like one, so a model pre-trained on these labels learns generic stroke and shape
/// features without seeing any benchmark class.
/// </summary>
public static class PretrainingCorpus
{
    /// <summary>The corpus's name, as recorded in a pool's pre-training record.</summary>
    public const string Name = "glyph-pretraining";

    /// <summary>One class per vocabulary character, named like "Ж U+0416".</summary>
    public static IReadOnlyList<string> ClassNames { get; } = PretrainingVocabulary.Characters.Select(PretrainingVocabulary.ClassName).ToArray();

    /// <summary>Renders the corpus and splits it per class: exactly the requested number of images of every class in each part.</summary>
    /// <param name="sources">Where the fonts are; <see cref="BenchmarkSources.Default"/> when null.</param>
    /// <param name="trainPerClass">Training images per class.</param>
    /// <param name="validationPerClass">Validation images per class.</param>
    /// <param name="testPerClass">Held-out images per class.</param>
    /// <param name="seed">Seed of the rendering and the split.</param>
    public static TaskSplits Load(BenchmarkSources? sources = null, int trainPerClass = 100, int validationPerClass = 10, int testPerClass = 10, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(trainPerClass);
        ArgumentOutOfRangeException.ThrowIfNegative(validationPerClass);
        ArgumentOutOfRangeException.ThrowIfNegative(testPerClass);
        sources ??= BenchmarkSources.Default;
        using var renderer = new GlyphRenderer(FontCatalog.Find(sources.FontDirectory));
        foreach (string character in PretrainingVocabulary.Characters)
        {
            int fonts = renderer.FontsCovering(character).Count;
            if (fonts < PretrainingVocabulary.MinimumFonts)
            {
                throw new InvalidOperationException(
                    $"Only {fonts} fonts under '{sources.FontDirectory}' have '{character}' ({PretrainingVocabulary.ClassName(character)}); " +
                    $"the corpus needs {PretrainingVocabulary.MinimumFonts}. Install the font packages of build.sh.");
            }
        }

        int classes = PretrainingVocabulary.Characters.Count;
        int perClass = trainPerClass + validationPerClass + testPerClass;
        int taskSeed = BenchmarkTask.DeriveSeed(seed, Name);
        ImageDataset pool = renderer.Render(PretrainingVocabulary.Characters, perClass, taskSeed, Name, ClassNames);
        return BenchmarkTasks.SplitPool(
            Name, pool, new SplitSizes(classes * trainPerClass, classes * validationPerClass, classes * testPerClass), taskSeed);
    }
}
