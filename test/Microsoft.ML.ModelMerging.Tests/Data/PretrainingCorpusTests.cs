using System.Text;
using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class PretrainingCorpusTests
{
    [TestMethod]
    public void VocabularyAvoidsEveryBenchmarkCharacterAndLookAlike()
    {
        IReadOnlyList<string> vocabulary = PretrainingVocabulary.Characters;
        var benchmark = BenchmarkTasks.All.SelectMany(t => t.Characters ?? t.ClassNames).Where(c => c.Length <= 2).ToHashSet();

        Assert.IsGreaterThanOrEqualTo(100, vocabulary.Count);
        Assert.IsLessThanOrEqualTo(300, vocabulary.Count);
        Assert.HasCount(vocabulary.Count, vocabulary.Distinct());
        CollectionAssert.IsSubsetOf("0123456789ABCDEFGHIJabcdefghij+=%&@#?$§!".Select(c => c.ToString()).ToArray(), benchmark.ToArray());
        Assert.IsEmpty(vocabulary.Intersect(benchmark), "benchmark characters in the corpus");
        Assert.IsEmpty(vocabulary.Intersect(PretrainingVocabulary.LookAlikes), "look-alikes in the corpus");
    }

    [TestMethod]
    public void VocabularyHasNoLatinLetterNorAnyDigit()
    {
        foreach (string character in PretrainingVocabulary.Characters)
        {
            Rune rune = Rune.GetRuneAt(character, 0);
            Assert.AreEqual(character.Length, rune.Utf16SequenceLength, $"'{character}' is one character");
            Assert.IsFalse(Rune.IsDigit(rune) || Rune.IsNumber(rune), $"'{character}' is a number");
            bool latinBlock = rune.Value < 0x0250 || rune.Value is >= 0x1D00 and < 0x1F00 || rune.Value is >= 0x2C60 and < 0x2C80 || rune.Value is >= 0xA720 and < 0xA800;
            Assert.IsFalse(Rune.IsLetter(rune) && latinBlock, $"'{character}' is a Latin letter");
        }
    }

    [TestMethod]
    public void EveryCharacterIsDrawnByEnoughFonts()
    {
        using var renderer = new GlyphRenderer(RealData.Fonts());

        foreach (string character in PretrainingVocabulary.Characters)
        {
            Assert.IsGreaterThanOrEqualTo(PretrainingVocabulary.MinimumFonts, renderer.FontsCovering(character).Count, PretrainingVocabulary.ClassName(character));
        }
    }

    [TestMethod]
    public void CorpusHasExactlyTheRequestedImagesPerClass()
    {
        RealData.Fonts();

        TaskSplits corpus = PretrainingCorpus.Load(RealData.Sources, trainPerClass: 3, validationPerClass: 1, testPerClass: 1, seed: 2);

        int classes = PretrainingVocabulary.Characters.Count;
        Assert.AreEqual(new SplitSizes(3 * classes, classes, classes), corpus.Sizes);
        Assert.IsTrue(corpus.Train.CountPerClass().All(n => n == 3));
        Assert.IsTrue(corpus.Validation.CountPerClass().All(n => n == 1));
        Assert.AreEqual("Γ U+0393", corpus.ClassNames[0]);
        Assert.AreEqual(corpus.Test.Fingerprint, PretrainingCorpus.Load(RealData.Sources, 3, 1, 1, seed: 2).Test.Fingerprint);
    }
}
