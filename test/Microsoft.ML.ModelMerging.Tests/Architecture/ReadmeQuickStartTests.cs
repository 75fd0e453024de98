using System.Text.RegularExpressions;

namespace Microsoft.ML.ModelMerging.Tests.Architecture;

/// <summary>The README's quick start is the example program itself, character for character, so it compiles as written.</summary>
[TestClass]
public sealed class ReadmeQuickStartTests
{
    [TestMethod]
    public void TheReadmeShowsExactlyTheQuickStartProgram()
    {
        string root = RepositoryRoot.Path;
        string readme = File.ReadAllText(Path.Combine(root, "README.md")).Replace("\r\n", "\n");
        string program = File.ReadAllText(Path.Combine(root, "examples", "QuickStart", "Program.cs")).Replace("\r\n", "\n").TrimEnd('\n');
        var block = Regex.Match(readme, @"## Quick start\n.*?```csharp\n(.*?)\n```", RegexOptions.Singleline);
        Assert.IsTrue(block.Success, "README.md has a Quick start section with a C# block");
        Assert.AreEqual(program, block.Groups[1].Value);
    }
}
