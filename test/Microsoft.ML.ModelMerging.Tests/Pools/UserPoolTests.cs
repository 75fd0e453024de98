using System.Text.Json;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Zoo;

namespace Microsoft.ML.ModelMerging.Tests.Pools;

/// <summary>
/// A user's own tasks end to end: two image folders the project has never seen are fine-tuned into a new pool, and every
/// pool verb (eval, adapt, compare) reports them like built-in tasks.
/// </summary>
[TestClass]
public sealed class UserPoolTests
{
    private static TempDirectory s_dir = null!;
    private static string s_pool = null!;
    private static (int Exit, string Output, string Error) s_first, s_second;

    [ClassInitialize]
    public static void Build(TestContext _)
    {
        s_dir = new TempDirectory();
        TestImageFolders.Shapes(s_dir.File("data/shapes"), perClass: 40, seed: 3);
        TestImageFolders.Stripes(s_dir.File("data/stripes"), perClass: 24, seed: 4);
        s_pool = s_dir.File("pool");
        s_first = CliRunner.Run("finetune", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"),
            "--task", s_dir.File("data/shapes"), "--add-to", s_pool, "--epochs", "2");
        s_second = CliRunner.Run("finetune", "--task", s_dir.File("data/stripes"), "--add-to", s_pool, "--epochs", "2", "--seed", "1");
    }

    [ClassCleanup]
    public static void Cleanup() => s_dir.Dispose();

    [TestMethod]
    public void FinetuneCreatesThePoolThenAddsToIt()
    {
        Assert.AreEqual(0, s_first.Exit, s_first.Error);
        Assert.AreEqual(0, s_second.Exit, s_second.Error);
        StringAssert.Contains(s_first.Output, "created the pool");
        StringAssert.Contains(s_second.Output, "added to the pool");
        foreach (string phase in new[] { "linear probe", "fine-tuning", "evaluation" }) StringAssert.Contains(s_first.Output, phase);

        var manifest = PoolManifest.Read(s_pool);
        CollectionAssert.AreEqual(new[] { "shapes", "stripes" }, manifest.Tasks.Select(t => t.Name).ToArray());
        var stripes = manifest.Task("stripes");
        Assert.AreEqual(TaskDataSource.ImageFolderKind, stripes.Data!.Kind);
        Assert.AreEqual(1, stripes.Data.Seed);
        Assert.AreEqual("../data/stripes", stripes.Data.Path, "a folder next to the pool is stored relative to it");
        CollectionAssert.AreEqual(new[] { "diagonal", "horizontal", "vertical" }, stripes.ClassNames.ToArray());
        Assert.AreEqual(2, stripes.Training!.FineTuning.Epochs);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(s_pool, "experts", "stripes.json")));
        Assert.AreEqual(stripes.Individual.Test, report.RootElement.GetProperty("expert").GetProperty("test").GetDouble(), 1e-4);
    }

    /// <summary>The accuracies recorded at fine-tuning are what an independent evaluation of the saved files gives.</summary>
    [TestMethod]
    public void RecordedAccuraciesMatchTheSavedExperts()
    {
        using var pool = ExpertPool.Load(s_pool);
        foreach (var task in pool.Tasks)
        {
            var test = pool.LoadData(task.Name).Test;
            double accuracy = ExpertTrainer.Accuracy(pool.Config, pool.Expert(task.Name), pool.Head(task.Name), test);
            Assert.AreEqual(task.Individual.Test, accuracy, 1e-4, task.Name);
            Assert.IsGreaterThan(task.PretrainedLinearProbe.Test - 0.2, accuracy, task.Name);
            Assert.IsGreaterThanOrEqualTo(0.7, accuracy, $"{task.Name}: the expert clearly beats chance");
        }
    }

    [TestMethod]
    public void EvalReportsTheUserTasks()
    {
        var (exit, output, error) = CliRunner.Run("eval", "--model", Path.Combine(s_pool, "experts", "shapes.safetensors"), "--zoo", s_pool);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "shapes");
        StringAssert.Contains(output, "stripes");
        double shapes = ExpertPool.Load(s_pool).Manifest.Task("shapes").Individual.Test;
        StringAssert.Contains(output, (100 * shapes).ToString("F1", System.Globalization.CultureInfo.InvariantCulture));
    }

    [TestMethod]
    public void AdaptWemoeOnTheUserPoolThenEval()
    {
        string run = s_dir.File("runs/wemoe");
        var (exit, output, error) = CliRunner.Run("adapt", "--zoo", s_pool, "--method", "wemoe", "--steps", "3", "--out", run);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "wemoe on 2 tasks");
        (exit, output, error) = CliRunner.Run("eval", "--model", run, "--zoo", s_pool);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "shapes");
        StringAssert.Contains(output, "stripes");
    }

    [TestMethod]
    public void AdaptRefusesAnUnknownTaskBeforeWritingAnything()
    {
        string run = s_dir.File("runs/unknown");
        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", s_pool, "--method", "wemoe", "--task", "cifar", "--steps", "3", "--out", run);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "The pool has no task 'cifar'; it has shapes, stripes");
        Assert.IsFalse(Directory.Exists(run) && Directory.EnumerateFileSystemEntries(run).Any(), "nothing is left behind");
    }

    [TestMethod]
    public void CompareRanksMethodsOnTheUserPool()
    {
        string output = s_dir.File("compare");
        var (exit, text, error) = CliRunner.Run("compare", "--zoo", s_pool, "--methods", "task-arithmetic,wemoe", "--tta-steps", "2", "--no-onnx", "--out", output);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "task-arithmetic");
        using var leaderboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "leaderboard.json")));
        string json = leaderboard.RootElement.GetRawText();
        StringAssert.Contains(json, "\"shapes\"");
        StringAssert.Contains(json, "\"stripes\"");
    }

    [TestMethod]
    public void ChangedImagesAreNoticed()
    {
        using var dir = new TempDirectory();
        string pool = dir.File("copy");
        CopyDirectory(s_pool, pool);
        string folder = dir.File("stripes");
        TestImageFolders.Stripes(folder, perClass: 24, seed: 9);
        var manifest = PoolManifest.Read(pool);
        var task = manifest.Task("stripes");
        manifest.WithTask(task with { Data = task.Data! with { Path = folder } }).Write(pool);
        using var experts = ExpertPool.Load(pool);
        var error = Assert.ThrowsExactly<InvalidDataException>(() => experts.LoadData("stripes"));
        StringAssert.Contains(error.Message, "changed since the expert was trained");
    }

    [TestMethod]
    public void FinetuneRefusesABaseOtherThanThePools()
    {
        var (exit, _, error) = CliRunner.Run("finetune", "--base", Path.Combine(CommittedZoo.Directory, "experts", "mnist.safetensors"),
            "--task", s_dir.File("data/shapes"), "--name", "shapes2", "--add-to", s_pool, "--epochs", "1");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is not the base of the pool");
        Assert.IsFalse(PoolManifest.Read(s_pool).Tasks.Any(t => t.Name == "shapes2"));
    }

    [TestMethod]
    public void AnExistingTaskIsKeptUnlessReplaced()
    {
        var before = File.ReadAllBytes(Path.Combine(s_pool, "experts", "shapes.safetensors"));
        var (exit, _, error) = CliRunner.Run("finetune", "--task", s_dir.File("data/shapes"), "--add-to", s_pool, "--epochs", "1");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "already has a task 'shapes': choose another --name, or --replace it");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(Path.Combine(s_pool, "experts", "shapes.safetensors")), "nothing is lost");
    }

    [TestMethod]
    public void AFailedFinetuneLeavesNoPoolBehind()
    {
        using var dir = new TempDirectory();
        TestImageFolders.Shapes(dir.File("tiny"), perClass: 2, seed: 5);
        string pool = dir.File("newpool");
        var (exit, _, error) = CliRunner.Run("finetune", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"),
            "--task", dir.File("tiny"), "--add-to", pool, "--epochs", "1");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "has 2 image(s); every class needs at least 3");
        Assert.IsFalse(PoolManifest.Exists(pool), "no pool appears when the first task fails");
        Assert.IsFalse(Directory.Exists(pool) && Directory.EnumerateFiles(pool, "*", SearchOption.AllDirectories).Any());

        // Adapter options with a full fine-tuning would be ignored: refused by name before anything runs.
        (exit, _, error) = CliRunner.Run("finetune", "--base", Path.Combine(CommittedZoo.Directory, "pretrained.safetensors"),
            "--task", dir.File("tiny"), "--add-to", pool, "--mode", "full", "--rank", "4");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "--rank sets up a LoRA adapter; it does not apply to --mode full");
    }

    [TestMethod]
    public void NamesThatDifferOnlyByCaseAndRepeatedTasksAreRefused()
    {
        var (exit, _, error) = CliRunner.Run("finetune", "--task", s_dir.File("data/shapes"), "--name", "Shapes", "--add-to", s_pool, "--epochs", "1");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "has a task 'shapes', which differs from 'Shapes' only by case");
        var twice = Assert.ThrowsExactly<ArgumentException>(() => ExpertPool.Load(s_pool, ["shapes", "shapes"]));
        StringAssert.Contains(twice.Message, "Task 'shapes' is asked for 2 times");
    }

    [TestMethod]
    public void ADamagedOrNewerManifestIsNamed()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("broken/pool.json"), "{ \"format\": 2, ");
        var broken = Assert.ThrowsExactly<InvalidDataException>(() => PoolManifest.Read(dir.File("broken")));
        StringAssert.Contains(broken.Message, "not a valid pool manifest");
        var manifest = PoolManifest.Read(s_pool) with { Format = 3 };
        Directory.CreateDirectory(dir.File("newer"));
        manifest.Write(dir.File("newer"));
        var newer = Assert.ThrowsExactly<InvalidDataException>(() => PoolManifest.Read(dir.File("newer")));
        StringAssert.Contains(newer.Message, "pool manifest format 3; this version reads formats 1 and 2");
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
