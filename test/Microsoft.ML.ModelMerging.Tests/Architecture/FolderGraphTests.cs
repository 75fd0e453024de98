using System.Text.RegularExpressions;

namespace Microsoft.ML.ModelMerging.Tests.Architecture;

/// <summary>
/// The library's folders form the layered graph the README states (its "folder graph" table): every folder uses only the
/// folders its row lists, and the stated graph has no cycle. A new dependency fails here until the README says it.
/// </summary>
[TestClass]
public sealed class FolderGraphTests
{
    private static string Root => RepositoryRoot.Path;

    private static string Library => Path.Combine(Root, "src", "Microsoft.ML.ModelMerging");

    /// <summary>The README's table between the folder-graph markers: folder → the folders it may use.</summary>
    private static Dictionary<string, HashSet<string>> Stated()
    {
        string readme = File.ReadAllText(Path.Combine(Root, "README.md"));
        var block = Regex.Match(readme, "<!-- folder-graph -->(.*?)<!-- /folder-graph -->", RegexOptions.Singleline);
        Assert.IsTrue(block.Success, "README.md has no folder-graph table");
        var stated = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (Match row in Regex.Matches(block.Groups[1].Value, @"^\|\s*`(\w+)/`\s*\|([^|]*)\|", RegexOptions.Multiline))
        {
            stated[row.Groups[1].Value] = [.. Regex.Matches(row.Groups[2].Value, @"`(\w+)`").Select(m => m.Groups[1].Value)];
        }

        return stated;
    }

    /// <summary>What each folder's sources use: <c>using</c> directives and qualified names of sibling namespaces.</summary>
    private static Dictionary<string, HashSet<string>> Actual(IReadOnlyCollection<string> folders)
    {
        var actual = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (string folder in folders)
        {
            var uses = actual[folder] = [];
            foreach (string file in Directory.EnumerateFiles(Path.Combine(Library, folder), "*.cs", SearchOption.AllDirectories))
            {
                string code = Regex.Replace(File.ReadAllText(file), @"//.*", "");
                foreach (string other in folders.Where(o => o != folder))
                {
                    if (Regex.IsMatch(code, $@"using Microsoft\.ML\.ModelMerging\.{other}\s*;") ||
                        Regex.IsMatch(code, $@"(?<![\w.])(Microsoft\.ML\.ModelMerging\.)?{other}\.[A-Z]\w*"))
                    {
                        uses.Add(other);
                    }
                }
            }
        }

        return actual;
    }

    private static string[] Folders() =>
        [.. Directory.GetDirectories(Library).Select(Path.GetFileName).Where(f => f is not ("bin" or "obj") && Directory.EnumerateFiles(Path.Combine(Library, f!), "*.cs", SearchOption.AllDirectories).Any()).Select(f => f!)];

    [TestMethod]
    public void EveryFolderUsesOnlyWhatTheReadmeStates()
    {
        var stated = Stated();
        var folders = Folders();
        CollectionAssert.AreEquivalent(folders, stated.Keys.ToArray(), "the README's folder graph lists exactly the library's folders");
        var problems = new List<string>();
        foreach (var (folder, uses) in Actual(folders))
        {
            foreach (string other in uses.Where(o => !stated[folder].Contains(o)).Order(StringComparer.Ordinal))
            {
                problems.Add($"{folder}/ uses {other}/");
            }
        }

        Assert.IsEmpty(problems, "dependencies the README's folder graph does not state: " + string.Join("; ", problems));
    }

    [TestMethod]
    public void TheStatedGraphHasNoCycle()
    {
        var stated = Stated();
        var remaining = new HashSet<string>(stated.Keys, StringComparer.Ordinal);
        while (remaining.Count > 0)
        {
            var ready = remaining.Where(f => !stated[f].Any(remaining.Contains)).ToList();
            Assert.IsNotEmpty(ready, "the folder graph has a cycle among " + string.Join(", ", remaining.Order(StringComparer.Ordinal)));
            remaining.ExceptWith(ready);
        }
    }

    /// <summary>The check itself: a source that uses a folder it may not is caught (so the test above can fail).</summary>
    [TestMethod]
    public void AnUnstatedDependencyWouldBeFound()
    {
        string probe = Path.Combine(Library, "Checkpoints", "FolderGraphProbe.cs");
        try
        {
            File.WriteAllText(probe, "namespace Microsoft.ML.ModelMerging.Checkpoints;\ninternal static class FolderGraphProbe { public static object? Use() => null; }\n// Algorithms.MergeAlgorithmRegistry\nusing Microsoft.ML.ModelMerging.Algorithms;\n");
            Assert.Contains("Algorithms", Actual(Folders())["Checkpoints"]);
        }
        finally
        {
            File.Delete(probe);
        }
    }
}
