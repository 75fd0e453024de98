using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

[TestClass]
public sealed class CommittedZooTests
{
    /// <summary>Both committed zoos: every artifact present, small enough to commit, each expert above its pre-trained probe.</summary>
    [TestMethod]
    [DataRow("far")]
    [DataRow("default")]
    public void ManifestDescribesEveryArtifact(string name)
    {
        string directory = name == "far" ? CommittedZoo.Far : CommittedZoo.Default;
        var manifest = PoolManifest.Read(directory);
        var recipe = ZooRecipe.Named(name);
        Assert.HasCount(recipe.Tasks.Count, manifest.Tasks);
        CollectionAssert.AreEquivalent(recipe.Tasks.Select(t => t.Name).ToArray(), manifest.Tasks.Select(t => t.Name).ToArray());
        Assert.IsGreaterThanOrEqualTo(3, manifest.Tasks.Select(t => t.Source).Distinct().Count(), "tasks from at least three sources");
        Assert.AreEqual(recipe.Hash, manifest.RecipeHash, "the committed zoo was built by its recipe");
        long bytes = 0;
        foreach (var file in new[] { manifest.Pretrained! }.Concat(manifest.Tasks.SelectMany(t => new[] { t.Expert, t.Head })))
        {
            var path = Path.Combine(directory, file);
            Assert.IsTrue(File.Exists(path), path);
            bytes += new FileInfo(path).Length;
        }
        Assert.IsLessThanOrEqualTo(25L << 20, bytes, "the zoo stays small enough to commit");
        foreach (var task in manifest.Tasks)
            Assert.IsGreaterThan(task.PretrainedLinearProbe.Test, task.Individual.Test, $"{task.Name}: the expert beats the pre-trained linear probe");
    }

    /// <summary>The expert's head is the linear probe kept frozen during fine-tuning, so one head reproduces both recorded accuracies.</summary>
    [TestMethod]
    [DataRow("mnist")]
    [DataRow("glyph-letters")]
    public void EvaluationReproducesTheManifestAccuracies(string task)
    {
        using var experts = ExpertPool.Load(CommittedZoo.Directory, new[] { task });
        var recorded = experts.Manifest.Task(task);
        var expert = TaskAccuracy.Evaluate(experts, experts.Config, experts.Expert(task), EvaluationSplit.Test);
        var probe = TaskAccuracy.Evaluate(experts, experts.Config, experts.Pretrained, EvaluationSplit.Validation);
        Assert.AreEqual(recorded.Individual.Test, Math.Round(expert.PerTask[task], 4));
        Assert.AreEqual(recorded.PretrainedLinearProbe.Validation, Math.Round(probe.PerTask[task], 4));
    }

    [TestMethod]
    public void ChangedTaskDataIsNoticed()
    {
        using var dir = new TempDirectory();
        foreach (var file in Directory.GetFiles(CommittedZoo.Directory, "*", SearchOption.AllDirectories))
            File.Copy(file, dir.File(Path.GetRelativePath(CommittedZoo.Directory, file)));
        var manifest = PoolManifest.Read(dir.Path);
        var tampered = manifest with
        {
            Tasks = manifest.Tasks.Select(t => t.Name == "mnist"
                ? t with { Fingerprints = new Dictionary<string, string>(t.Fingerprints) { ["test"] = new string('0', 64) } } : t).ToList(),
        };
        tampered.Write(dir.Path);
        using var experts = ExpertPool.Load(dir.Path, new[] { "mnist" });
        var error = Assert.ThrowsExactly<InvalidDataException>(() => experts.LoadData("mnist"));
        StringAssert.Contains(error.Message, "Task 'mnist' test split differs from the one the zoo was built on");
    }
}
