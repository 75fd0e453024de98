using Microsoft.ML.ModelMerging.Data;

namespace Microsoft.ML.ModelMerging.Tests.Data;

[TestClass]
public sealed class FontCatalogTests
{
    [TestMethod]
    public void UnderTheSystemDirectoryOnlyThePinnedPackagesFontsAreRead()
    {
        // The zoos' glyph tasks are fingerprinted: a font another package installed must not enter them.
        var fonts = RealData.Fonts();
        foreach (string font in fonts)
        {
            string relative = Path.GetRelativePath(FontCatalog.DefaultDirectory, font).Replace('\\', '/');
            Assert.IsTrue(FontCatalog.PackageFolders.Any(folder => relative.StartsWith(folder + "/", StringComparison.Ordinal)), $"{font} is outside the pinned font packages");
        }

        CollectionAssert.AreEqual(fonts.Order(StringComparer.Ordinal).ToList(), fonts.ToList(), "fonts come in ordinal path order");
    }

    [TestMethod]
    public void AnotherDirectoryIsReadWholeAndPinnedFoldersFilterIt()
    {
        var installed = RealData.Fonts();
        using var directory = new TempDirectory();
        string pinned = directory.File("truetype/dejavu/first.ttf");
        string foreign = directory.File("truetype/noto/second.ttf");
        string nested = directory.File("truetype/dejavu/more/third.otf");
        File.Copy(installed[0], pinned);
        File.Copy(installed[0], foreign);
        File.Copy(installed[0], nested);
        File.WriteAllText(directory.File("truetype/dejavu/readme.txt"), "not a font");

        CollectionAssert.AreEqual(new[] { pinned, nested, foreign }.Order(StringComparer.Ordinal).ToList(), FontCatalog.Find(directory.Path).ToList());
        CollectionAssert.AreEqual(new[] { pinned, nested }.Order(StringComparer.Ordinal).ToList(), FontCatalog.Find(directory.Path, FontCatalog.PackageFolders).ToList());

        // A font directory without any of the pinned packages' folders is named as such.
        using var bare = new TempDirectory();
        File.Copy(installed[0], bare.File("truetype/noto/only.ttf"));
        StringAssert.Contains(Assert.ThrowsExactly<DirectoryNotFoundException>(() => FontCatalog.Find(bare.Path, FontCatalog.PackageFolders)).Message, "None of the font folders");
    }
}
