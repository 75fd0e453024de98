using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Zoo;

[TestClass]
public sealed class CommittedZooTests
{
    /// <summary>The committed zoos: every artifact present, small enough to commit, each expert above its pre-trained probe.</summary>
    [TestMethod]
    [DataRow("far")]
    [DataRow("default")]
    [DataRow("nonlocal")]
    public void ManifestDescribesEveryArtifact(string name)
    {
        string directory = name switch { "far" => CommittedZoo.Far, "nonlocal" => CommittedZoo.NonLocal, _ => CommittedZoo.Default };
        var manifest = PoolManifest.Read(directory);
        var recipe = ZooRecipe.Named(name);
        Assert.HasCount(recipe.Tasks.Count, manifest.Tasks);
        CollectionAssert.AreEquivalent(recipe.Tasks.Select(t => t.Name).ToArray(), manifest.Tasks.Select(t => t.Name).ToArray());
        Assert.IsGreaterThanOrEqualTo(3, manifest.Tasks.Select(t => t.Source).Distinct().Count(), "tasks from at least three sources");
        Assert.AreEqual(recipe.Hash, manifest.RecipeHash, "the committed zoo was built by its recipe");
        long bytes = 0;
        var foundations = manifest.Tasks.Select(t => t.Foundation).OfType<string>().Distinct().ToList();
        Assert.HasCount(recipe.Foundations == 1 ? 0 : recipe.Foundations, foundations, "a non-local zoo names each expert's foundation");
        foreach (var file in new[] { manifest.Pretrained! }.Concat(foundations).Concat(manifest.Tasks.SelectMany(t => new[] { t.Expert, t.Head })))
        {
            var path = Path.Combine(directory, file);
            Assert.IsTrue(File.Exists(path), path);
            bytes += new FileInfo(path).Length;
        }
        Assert.IsLessThanOrEqualTo(32L << 20, bytes, "the zoo stays small enough to commit");
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

    /// <summary>
    /// The non-local zoo's foundations differ only in their seed, and its base is their mean: each foundation records the
    /// pre-training of its seed (foundation 0's is the one the v3 default zoo's pre-trained model had), and each expert
    /// starts from the foundation the recipe assigns to its task.
    /// </summary>
    [TestMethod]
    public void NonLocalZooIsBuiltFromTwoSeededFoundations()
    {
        using var scope = NewDisposeScope();
        var manifest = PoolManifest.Read(CommittedZoo.NonLocal);
        using var zero = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.NonLocal, ZooRecipe.FoundationPath(0)));
        using var one = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.NonLocal, ZooRecipe.FoundationPath(1)));
        using var mean = ModelCheckpoints.LoadBackbone(Path.Combine(CommittedZoo.NonLocal, manifest.Pretrained!));
        for (int f = 0; f < 2; f++)
        {
            using var checkpoint = Checkpoint.Open(Path.Combine(CommittedZoo.NonLocal, ZooRecipe.FoundationPath(f)));
            Assert.AreEqual(ZooRecipe.NonLocal.FoundationPretrainingHash(f), checkpoint.Metadata["mlmerge.zoo_recipe"], $"foundation {f}'s pre-training");
        }

        foreach (var (name, value) in mean.Weights)
        {
            if (value.numel() > 1) Assert.IsFalse(zero.Weights[name].eq(one.Weights[name]).all().item<bool>(), $"{name}: the foundations differ");
            Assert.IsTrue(value.allclose((zero.Weights[name].Plus(one.Weights[name])).DividedBy(2), rtol: 0, atol: 1e-6), $"{name}: the base is their mean");
        }

        for (int i = 0; i < manifest.Tasks.Count; i++)
            Assert.AreEqual(ZooRecipe.FoundationPath(ZooRecipe.NonLocal.FoundationOf(i)), manifest.Tasks[i].Foundation, manifest.Tasks[i].Name);
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
