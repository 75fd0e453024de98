using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Pools;

/// <summary>
/// A user's own Hugging Face experts as a new user brings them: results tied to the files they were made from, failures
/// that leave nothing behind, images that do not decode, experts of different initialisations in a pool without a base,
/// and a checkpoint of another architecture named by the field that differs.
/// </summary>
[TestClass]
public sealed class UserInputTests
{
    private static TempDirectory s_dir = null!;
    private static Dictionary<string, Tensor> s_weights = null!;

    [ClassInitialize]
    public static void Build(TestContext _)
    {
        s_dir = new TempDirectory();
        var config = VisionTransformerConfig.FromHuggingFaceConfig(HuggingFacePoolTests.ConfigJson, preprocessorConfigJson: HuggingFacePoolTests.PreprocessorJson);
        s_weights = ModelTestData.RandomWeights(config, seed: 5).ToDictionary(kv => kv.Key, kv => kv.Value.Times(0.5).DetachFromDisposeScope());
        Model("models/base", s_weights);
        for (int i = 0; i < 3; i++) Model($"models/expert{i}", Perturbed(s_weights, (ulong)(30 + i)));
        HuggingFacePoolTests.DrawTask(s_dir.File("images/colors"), ["blue", "green", "red"], seed: 1);
        HuggingFacePoolTests.DrawTask(s_dir.File("images/bands"), ["horizontal", "vertical"], seed: 2);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        foreach (var t in s_weights.Values) t.Dispose();
        s_dir.Dispose();
    }

    private static string Model(string name, Dictionary<string, Tensor> weights, string? configJson = null) =>
        HuggingFaceTestModel.Write(s_dir.File(name), weights, configJson ?? HuggingFacePoolTests.ConfigJson, HuggingFacePoolTests.PreprocessorJson);

    private static Dictionary<string, Tensor> Perturbed(Dictionary<string, Tensor> weights, ulong seed)
    {
        var g = new Generator(seed);
        return weights.ToDictionary(kv => kv.Key, kv => kv.Value.Plus(randn(kv.Value.shape, generator: g).Times(0.02)));
    }

    private static void Run(params string[] args)
    {
        var (exit, output, error) = CliRunner.Run(args);
        Assert.AreEqual(0, exit, $"{string.Join(" ", args)}\n{output}\n{error}");
    }

    /// <summary>A pool of two tasks around the shared base, the experts given by index.</summary>
    private static string Pool(string name, int colorsExpert, int bandsExpert, bool copy = false)
    {
        string pool = s_dir.File(name);
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        string[] copied = copy ? ["--copy"] : [];
        Run(["pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_dir.File($"models/expert{colorsExpert}"), "--probe", .. copied]);
        Run(["pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", s_dir.File($"models/expert{bandsExpert}"), "--probe", .. copied]);
        return pool;
    }

    /// <summary>
    /// Two pools side by side refer to the base by the same relative path; a TACT result of one, copied next to the other,
    /// is neither taken as that pool's finished run nor evaluated on it, and an expert replaced in place is noticed too.
    /// </summary>
    [TestMethod]
    public void AResultIsTiedToTheFilesItWasMadeFrom()
    {
        string first = Pool("tied/first", 0, 1), second = Pool("tied/second", 2, 1);
        Assert.AreEqual(PoolManifest.Read(first).Identity, PoolManifest.Read(second).Identity, "the pools' identities alone cannot tell them apart");
        string run = s_dir.File("tied/runs/first");
        Run("adapt", "--zoo", first, "--method", "tact", "--base-method", "simple-average", "--out", run);
        string copy = s_dir.File("tied/runs/copy");
        Directory.CreateDirectory(copy);
        foreach (string file in Directory.GetFiles(run)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));

        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", second, "--method", "tact", "--base-method", "simple-average", "--out", copy);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "holds a run of the same command on other files (expert:colors differ");
        (exit, _, error) = CliRunner.Run("eval", "--model", run, "--zoo", second);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "was made from other files");
        StringAssert.Contains(error, "expert:colors");

        // A manifest written before inputs were recorded still loads on its pool.
        string manifestPath = Path.Combine(run, "adaptation.json");
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        Assert.IsTrue(manifest.Remove("inputs"));
        File.WriteAllText(manifestPath, manifest.ToJsonString());
        Run("eval", "--model", run, "--zoo", first);

        // The same pool after its expert file was overwritten in place.
        string replaced = Pool("tied/replaced", 0, 1, copy: true);
        string before = s_dir.File("tied/runs/replaced");
        Run("adapt", "--zoo", replaced, "--method", "tact", "--base-method", "simple-average", "--out", before);
        Run("eval", "--model", before, "--zoo", replaced);
        using (var other = ModelCheckpoints.LoadBackbone(s_dir.File("models/expert2")))
            ModelCheckpoints.SaveBackbone(Path.Combine(replaced, PoolManifest.Read(replaced).Task("bands").Expert), other.Config, other.Weights);
        (exit, _, error) = CliRunner.Run("eval", "--model", before, "--zoo", replaced);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "expert:bands");
    }

    /// <summary>An adaptation that fails on a broken expert names the file and the tensor, and leaves no output directory.</summary>
    [TestMethod]
    public void AFailedAdaptationLeavesNoOutput()
    {
        string pool = Pool("failed/pool", 0, 1, copy: true);
        string expert = Path.Combine(pool, PoolManifest.Read(pool).Task("bands").Expert);
        Dictionary<string, Tensor> tensors;
        Dictionary<string, string> metadata;
        using (var file = Checkpoint.Open(expert))
        {
            tensors = file.ReadAll();
            metadata = file.Metadata.ToDictionary();
        }

        string broken = VisionTransformerNames.Layer(1).Fc1 + ".weight";
        tensors[broken] = tensors[broken].t().contiguous();
        SafeTensorsWriter.Save(expert, tensors, metadata);
        foreach (string[] method in new[] { new[] { "tact" }, ["wemoe", "--steps", "2"] })
        {
            string run = s_dir.File($"failed/runs/{method[0]}");
            var (exit, _, error) = CliRunner.Run(["adapt", "--zoo", pool, "--method", .. method, "--out", run]);
            Assert.AreEqual(1, exit, method[0]);
            StringAssert.Contains(error, broken, method[0]);
            Assert.IsFalse(Directory.Exists(run), $"{method[0]}: {run} is left behind");
        }

        var (code, _, message) = CliRunner.Run("compare", "--zoo", pool, "--methods", "task-arithmetic", "--out", s_dir.File("failed/compare"));
        Assert.AreEqual(1, code);
        StringAssert.Contains(message, broken);
        Assert.IsFalse(Directory.Exists(s_dir.File("failed/compare")));
    }

    /// <summary>A truncated PNG and a text file named .png are refused by name, through the ML.NET reading a Hugging Face pool uses.</summary>
    [TestMethod]
    public void ImagesThatDoNotDecodeAreNamed()
    {
        string pool = s_dir.File("images-pool");
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        string images = s_dir.File("bad-images");
        foreach (string label in new[] { "blue", "green", "red" })
        {
            Directory.CreateDirectory(Path.Combine(images, label));
            foreach (string file in Directory.GetFiles(s_dir.File($"images/colors/{label}")))
                File.Copy(file, Path.Combine(images, label, Path.GetFileName(file)));
        }

        string truncated = Path.Combine(images, "red", "truncated.png");
        File.WriteAllBytes(truncated, File.ReadAllBytes(Path.Combine(images, "red", "0.png"))[..100]);
        string[] add = ["pool", "add", "--zoo", pool, "--task", "colors", "--images", images, "--expert", s_dir.File("models/expert0"), "--probe"];
        var (exit, _, error) = CliRunner.Run(add);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, truncated);

        File.Delete(truncated);
        string text = Path.Combine(images, "green", "notes.png");
        File.WriteAllText(text, "not an image");
        (exit, _, error) = CliRunner.Run(add);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, text);
        Assert.IsEmpty(PoolManifest.Read(pool).Tasks);

        // Registered whole, then a file that does not decode appears in the folder: the later read names that file.
        File.Delete(text);
        Run(add);
        File.WriteAllText(text, "not an image");
        (exit, _, error) = CliRunner.Run("eval", "--model", s_dir.File("models/base"), "--zoo", pool);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, text);

        // One class is no classification task.
        string single = s_dir.File("single-class");
        Directory.CreateDirectory(Path.Combine(single, "red"));
        foreach (string file in Directory.GetFiles(s_dir.File("images/colors/red"))) File.Copy(file, Path.Combine(single, "red", Path.GetFileName(file)));
        (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "one", "--images", single, "--expert", s_dir.File("models/expert0"), "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "1 class sub-folder(s) (red); a classification task needs at least two");
    }

    /// <summary>
    /// Experts of two different random initialisations: a pool without a shared base takes each with its foundation (and
    /// asks for one when it is missing), alignment matches the foundations and gives the pool a base, and an aligned expert
    /// computes what it did.
    /// </summary>
    [TestMethod]
    public void ExpertsOfDifferentInitialisationsGoThroughAPoolWithoutABase()
    {
        var config = VisionTransformerConfig.FromHuggingFaceConfig(HuggingFacePoolTests.ConfigJson, preprocessorConfigJson: HuggingFacePoolTests.PreprocessorJson);
        using var scope = NewDisposeScope();
        var other = ModelTestData.RandomWeights(config, seed: 6).ToDictionary(kv => kv.Key, kv => kv.Value.Times(0.5));
        string foundationA = s_dir.File("models/base"), foundationB = Model("nonlocal/foundation-b", other);
        string expertB = Model("nonlocal/expert-b", Perturbed(other, 40));
        string pool = s_dir.File("nonlocal/pool");
        Run("pool", "create", "--no-base-like", s_dir.File("models/expert0"), "--out", pool);
        Assert.IsNull(PoolManifest.Read(pool).Pretrained);
        Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_dir.File("models/expert0"),
            "--foundation", foundationA, "--probe");
        string[] bands = ["pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", expertB, "--probe"];
        var (exit, _, error) = CliRunner.Run(bands);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "--foundation");
        Run([.. bands, "--foundation", foundationB]);
        var manifest = PoolManifest.Read(pool);
        Assert.IsNotNull(manifest.Task("bands").Foundation);
        StringAssert.Contains(manifest.Task("bands").Source, "fine-tuned from");

        string aligned = s_dir.File("nonlocal/aligned");
        // A temporary pool an earlier, killed run left beside the output (its process gone) is removed on the way.
        string stale = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(aligned))!, $".{Path.GetFileName(aligned)}.999999999.{Guid.NewGuid():N}.partial");
        Directory.CreateDirectory(Path.Combine(stale, "foundations"));
        File.WriteAllText(Path.Combine(stale, "foundations", "foundation-0.safetensors"), "half");
        // Another output's temporary (a longer name that starts the same) is not this one's to remove.
        string otherTemporary = Path.Combine(Path.GetDirectoryName(stale)!, $".{Path.GetFileName(aligned)}.old.999999999.{Guid.NewGuid():N}.partial");
        Directory.CreateDirectory(otherTemporary);
        Run("align", "--zoo", pool, "--out", aligned);
        Assert.IsFalse(Directory.Exists(stale), "the stale temporary pool is gone");
        Assert.IsTrue(Directory.Exists(otherTemporary), "a temporary of another output is kept");
        Assert.IsNotNull(PoolManifest.Read(aligned).Pretrained, "the aligned pool's base is the mean of the aligned foundations");
        using (var source = ExpertPool.Load(pool))
        using (var target = ExpertPool.Load(aligned))
        {
            var images = source.LoadData("bands").Test.ToTensor();
            var before = source.Head("bands").Forward(VisionTransformer.Forward(source.Config, source.Expert("bands"), images));
            var after = target.Head("bands").Forward(VisionTransformer.Forward(target.Config, target.Expert("bands"), images));
            Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(before, after));
        }

        Run("adapt", "--zoo", aligned, "--method", "tact", "--base-method", "task-arithmetic", "--out", s_dir.File("nonlocal/tact"));
    }

    /// <summary>A class too small to appear in every split is refused by name instead of going unmeasured.</summary>
    [TestMethod]
    public void AClassTooSmallForEverySplitIsNamed()
    {
        string pool = s_dir.File("small/pool");
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        string images = s_dir.File("small/images");
        foreach (string label in new[] { "horizontal", "vertical" })
        {
            Directory.CreateDirectory(Path.Combine(images, label));
            var files = Directory.GetFiles(s_dir.File($"images/bands/{label}")).Order(StringComparer.Ordinal).Take(label == "vertical" ? 2 : 12);
            foreach (string file in files) File.Copy(file, Path.Combine(images, label, Path.GetFileName(file)));
        }

        var (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "bands", "--images", images, "--expert", s_dir.File("models/expert0"), "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "class 'vertical' has 2 image(s)");
    }

    /// <summary>An expert of another architecture is refused naming the field that differs, not two whole configs.</summary>
    [TestMethod]
    public void AnExpertOfAnotherArchitectureIsRefusedByTheFieldThatDiffers()
    {
        string pool = s_dir.File("mismatch/pool");
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        string gelu = Model("mismatch/gelu", s_weights, HuggingFacePoolTests.ConfigJson.Replace("quick_gelu", "gelu", StringComparison.Ordinal));
        var (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", gelu, "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "activation: \"gelu\", the pool's \"quick_gelu\"");

        // An expert whose processor resizes otherwise is refused by pool add as the same file is by pool create.
        string resized = s_dir.File("mismatch/resized");
        HuggingFaceTestModel.Write(resized, s_weights, HuggingFacePoolTests.ConfigJson,
            HuggingFacePoolTests.PreprocessorJson.Replace("\"shortest_edge\": 32", "\"shortest_edge\": 40", StringComparison.Ordinal));
        (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", resized, "--probe");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "shortest_edge 40 differs from crop_size 32");
    }

    /// <summary>
    /// Two pools of the same files whose images were split with another seed: a result of one is not the other's finished
    /// run, and is not evaluated on it.
    /// </summary>
    [TestMethod]
    public void AResultIsTiedToTheImagesItWasMadeFrom()
    {
        string first = Pool("images-tied/first", 0, 1);
        string second = s_dir.File("images-tied/second");
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", second);
        Run("pool", "add", "--zoo", second, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_dir.File("models/expert0"), "--probe");
        Run("pool", "add", "--zoo", second, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", s_dir.File("models/expert1"), "--probe", "--seed", "7");
        string run = s_dir.File("images-tied/run");
        Run("adapt", "--zoo", first, "--method", "tact", "--base-method", "simple-average", "--out", run);

        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", second, "--method", "tact", "--base-method", "simple-average", "--out", run);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "holds a run of the same command on other files (data:bands");
        (exit, _, error) = CliRunner.Run("eval", "--model", run, "--zoo", second);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "data:bands");
        Run("eval", "--model", run, "--zoo", first);
        // Without --zoo, an adaptation directory is scored on the pool it records.
        var (evalExit, evalOutput, evalError) = CliRunner.Run("eval", "--model", run);
        Assert.AreEqual(0, evalExit, evalError);
        StringAssert.Contains(evalOutput, "bands");
    }

    /// <summary>A class folder renamed after registration (the pixels and labels unchanged) is refused, not scored under the old name.</summary>
    [TestMethod]
    public void AClassFolderRenamedAfterRegistrationIsRefused()
    {
        string pool = s_dir.File("renamed-pool");
        string images = s_dir.File("renamed-images");
        foreach (string file in Directory.GetFiles(s_dir.File("images/colors"), "*", SearchOption.AllDirectories))
        {
            string copy = Path.Combine(images, Path.GetRelativePath(s_dir.File("images/colors"), file));
            Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
            File.Copy(file, copy);
        }

        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", images, "--expert", s_dir.File("models/expert0"), "--probe");
        Directory.Move(Path.Combine(images, "red"), Path.Combine(images, "ruby"));

        var (exit, _, error) = CliRunner.Run("eval", "--model", s_dir.File("models/base"), "--zoo", pool);

        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, $"Task 'colors': the class folders of {images} are now (blue, green, ruby), but the task was registered with (blue, green, red).");
    }

    /// <summary>
    /// Outputs named where the pool's own files live are refused before anything is written: an adaptation into an expert's
    /// folder, an alignment forced over the folder of the models, an ONNX export over a checkpoint or into a directory.
    /// </summary>
    [TestMethod]
    public void AnOutputThatHoldsAnInputIsRefusedAndTheInputKept()
    {
        Model("overlap/models/base", s_weights);
        Model("overlap/models/expert0", Perturbed(s_weights, 40));
        Model("overlap/models/expert1", Perturbed(s_weights, 41));
        string pool = s_dir.File("overlap/pool");
        Run("pool", "create", "--base", s_dir.File("overlap/models/base"), "--out", pool);
        Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_dir.File("overlap/models/expert0"), "--probe");
        Run("pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", s_dir.File("overlap/models/expert1"), "--probe");
        string models = s_dir.File("overlap/models");
        var before = Directory.GetFiles(models, "*", SearchOption.AllDirectories).ToDictionary(f => f, f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f))));

        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", pool, "--method", "tact", "--base-method", "simple-average", "--out", Path.Combine(models, "expert0"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "holds the input");
        (exit, _, error) = CliRunner.Run("adapt", "--zoo", pool, "--method", "fisher", "--examples", "4", "--out", pool);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "holds the input");
        (exit, _, error) = CliRunner.Run("align", "--zoo", pool, "--out", models, "--force");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "which the pool being aligned reads");
        string baseFile = Path.Combine(models, "base", "model.safetensors");
        (exit, _, error) = CliRunner.Run("export-onnx", "--model", baseFile, "--zoo", pool, "--out", baseFile);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is a safetensors checkpoint");
        (exit, _, error) = CliRunner.Run("export-onnx", "--model", baseFile, "--zoo", pool, "--out", s_dir.File("overlap/pool/heads"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is a directory");

        var after = Directory.GetFiles(models, "*", SearchOption.AllDirectories).ToDictionary(f => f, f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f))));
        CollectionAssert.AreEquivalent(before.ToList(), after.ToList(), "every model file is where it was, unchanged");
    }

    /// <summary>An adaptation whose loss turns NaN stops at that step with the learning rate named, and leaves no output.</summary>
    [TestMethod]
    public void ADivergingAdaptationStopsWithAClearErrorAndLeavesNothing()
    {
        string pool = Pool("diverge/pool", 0, 1);
        string run = s_dir.File("diverge/run");
        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", pool, "--method", "wemoe", "--lr", "1e30", "--steps", "5", "--out", run);
        Assert.AreEqual(1, exit, error);
        StringAssert.Contains(error, "Adaptation diverged: the loss is NaN at step");
        StringAssert.Contains(error, "lower the learning rate (mlmerge adapt: --lr");
        Assert.IsFalse(Directory.Exists(run), "no output directory is left");
    }

    /// <summary>
    /// A task is registered again with --replace (here with another split seed), which the changed-images error advises;
    /// without it the name is refused with that option named.
    /// </summary>
    [TestMethod]
    public void ATaskIsRegisteredAgainWithReplace()
    {
        string pool = Pool("replace/pool", 0, 1);
        var before = PoolManifest.Read(pool).Task("bands");
        string[] add = ["pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", s_dir.File("models/expert2"), "--probe", "--seed", "7"];
        var (exit, _, error) = CliRunner.Run(add);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "already has a task 'bands': choose another --task name, or --replace to register it again");
        Run([.. add, "--replace"]);
        var manifest = PoolManifest.Read(pool);
        CollectionAssert.AreEqual(new[] { "colors", "bands" }, manifest.Tasks.Select(t => t.Name).ToArray());
        var after = manifest.Task("bands");
        Assert.AreEqual(7, after.Data!.Seed);
        Assert.AreNotEqual(before.Fingerprints["test"], after.Fingerprints["test"], "the new seed drew other splits");
        StringAssert.EndsWith(after.Expert.Replace('\\', '/'), "models/expert2");

        // Copied into the pool, then registered again from that very copy: nothing is copied onto itself, nothing is lost.
        Run([.. add, "--replace", "--copy"]);
        string copy = Path.Combine(pool, "experts", "bands.safetensors");
        Assert.AreEqual("experts/bands.safetensors", PoolManifest.Read(pool).Task("bands").Expert);
        string[] again = ["pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", copy, "--probe", "--copy", "--replace"];
        Run(again);
        Assert.AreEqual("experts/bands.safetensors", PoolManifest.Read(pool).Task("bands").Expert);
        Run("eval", "--model", copy, "--zoo", pool, "--task", "bands");
        Assert.IsEmpty(Directory.GetFiles(pool, "*.incoming", SearchOption.AllDirectories), "no staged file is left");

        // export-onnx never replaces a file that is not an .onnx model.
        var (onnxExit, _, onnxError) = CliRunner.Run("export-onnx", "--model", copy, "--zoo", pool, "--out", Path.Combine(pool, "pool.json"));
        Assert.AreEqual(1, onnxExit);
        StringAssert.Contains(onnxError, "exists and is not an .onnx file");

        // An ONNX model given where a checkpoint is read is named as what it is.
        string onnx = s_dir.File("replace/model.onnx");
        Run("export-onnx", "--model", copy, "--zoo", pool, "--out", onnx);
        (onnxExit, _, onnxError) = CliRunner.Run("eval", "--model", onnx, "--zoo", pool);
        Assert.AreEqual(1, onnxExit);
        StringAssert.Contains(onnxError, "this is an ONNX model");
    }

    /// <summary>
    /// Ctrl+C keeps what a command finished and says so: an adaptation past its first checkpoint points to resuming, and a
    /// comparison writes the leaderboard of the methods done, both exiting as cancelled (130), not as a success.
    /// </summary>
    [TestMethod]
    public void AnInterruptKeepsFinishedWorkAndSaysWhere()
    {
        if (OperatingSystem.IsWindows()) Assert.Inconclusive("POSIX signals");
        string pool = Pool("interrupt/pool", 0, 1);
        string run = s_dir.File("interrupt/run");
        var (exit, error) = RunUntil(["adapt", "--zoo", pool, "--method", "wemoe", "--steps", "100000", "--checkpoint-every", "1", "--out", run],
            () => File.Exists(Path.Combine(run, "checkpoint.safetensors")));
        Assert.AreEqual(130, exit, error);
        StringAssert.Contains(error, "cancelled by SIGINT; " + run + " keeps the last checkpoint: run the same command again to resume from it.");
        Assert.IsTrue(File.Exists(Path.Combine(run, "checkpoint.safetensors")));

        string compared = s_dir.File("interrupt/compare");
        (exit, error) = RunUntil(["compare", "--zoo", pool, "--methods", "simple-average,task-arithmetic,ties,wemoe", "--tta-steps", "100000", "--no-onnx", "--out", compared],
            () => File.Exists(Path.Combine(compared, "leaderboard.csv")) && File.ReadAllText(Path.Combine(compared, "leaderboard.csv")).Contains("ties", StringComparison.Ordinal));
        Assert.AreEqual(130, exit, error);
        StringAssert.Contains(error, "cancelled by SIGINT; the leaderboard of the methods finished so far is in");
        StringAssert.Contains(File.ReadAllText(Path.Combine(compared, "leaderboard.csv")), "task-arithmetic");
    }

    /// <summary>Runs mlmerge in a child process and sends it SIGINT once <paramref name="ready"/> holds.</summary>
    private static (int Exit, string Error) RunUntil(string[] args, Func<bool> ready)
    {
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in args.Prepend(Cli.ReliabilityCommandTests.MlmergeDll())) start.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!process.HasExited && !ready() && waited.Elapsed < TimeSpan.FromMinutes(5)) Thread.Sleep(20);
        Assert.IsFalse(process.HasExited, $"mlmerge {string.Join(" ", args)} ended before the signal: {stderr.Result}");
        using (var kill = System.Diagnostics.Process.Start("kill", ["-INT", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
        process.WaitForExit();
        _ = stdout.Result;
        return (process.ExitCode, stderr.Result);
    }

    /// <summary>
    /// An expert file replaced by a model of another architecture after it was registered is named by task, file and
    /// field before any work (adapt, align), and eval refuses a model of another architecture than the pool's heads read.
    /// </summary>
    [TestMethod]
    public void AModelOfAnotherArchitectureIsNamedByTaskAndFieldBeforeAnyWork()
    {
        Model("archmix/models/expert0", Perturbed(s_weights, 50));
        string changed = Model("archmix/models/expert1", Perturbed(s_weights, 51));
        string pool = s_dir.File("archmix/pool");
        Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool);
        Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_dir.File("archmix/models/expert0"), "--probe");
        Run("pool", "add", "--zoo", pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", changed, "--probe");
        File.WriteAllText(Path.Combine(changed, "config.json"), HuggingFacePoolTests.ConfigJson.Replace("quick_gelu", "gelu", StringComparison.Ordinal));

        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", pool, "--method", "tact", "--base-method", "simple-average", "--out", s_dir.File("archmix/run"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, $"The expert of task 'bands' ({changed}) is not a model of the pool's architecture (activation: \"gelu\", the pool's \"quick_gelu\")");
        Assert.IsFalse(Directory.Exists(s_dir.File("archmix/run")));
        (exit, _, error) = CliRunner.Run("align", "--zoo", pool, "--out", s_dir.File("archmix/aligned"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "The expert of task 'bands'");
        (exit, _, error) = CliRunner.Run("eval", "--model", changed, "--zoo", pool, "--task", "colors");
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "is not a model of the pool's architecture (activation");

        // A Hugging Face base without its processor file: the assumed processor is said.
        string bare = Model("archmix/bare", s_weights);
        File.Delete(Path.Combine(bare, "preprocessor_config.json"));
        var (created, output, createError) = CliRunner.Run("pool", "create", "--base", bare, "--out", s_dir.File("archmix/bare-pool"));
        Assert.AreEqual(0, created, createError);
        StringAssert.Contains(output, "note: no preprocessor_config.json beside");
        StringAssert.Contains(output, "CLIP's processor is assumed");
    }
}
