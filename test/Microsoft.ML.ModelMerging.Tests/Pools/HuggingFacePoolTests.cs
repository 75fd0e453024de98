using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using Microsoft.ML.ModelMerging.Tests.Onnx;
using Microsoft.ML.ModelMerging.Zoo;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Pools;

/// <summary>
/// Issue 18 "Build": a user's own experts in the Hugging Face CLIP layout (model directories with <c>model.safetensors</c>,
/// <c>config.json</c>, <c>preprocessor_config.json</c>), image folders of PNG and JPEG files of odd sizes, through
/// <c>pool create</c> / <c>pool add</c> and every pool verb. The checkpoints are small (image 32, patch 8, width 32,
/// 2 layers, projection 16) but take the same code paths as a ViT-B/32.
/// </summary>
[TestClass]
public sealed class HuggingFacePoolTests
{
    internal const string ConfigJson = """
        {"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "patch_size": 8, "image_size": 32, "num_channels": 3, "hidden_act": "quick_gelu",
         "layer_norm_eps": 1e-5, "projection_dim": 16}
        """;

    internal const string PreprocessorJson = """
        {"crop_size": {"height": 32, "width": 32}, "do_center_crop": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
         "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 32}}
        """;

    private static readonly string[] Tasks = ["colors", "bands", "bright"];
    private static TempDirectory s_dir = null!;
    private static string s_pool = null!;
    private static string[] s_experts = null!;
    private static readonly List<(int Exit, string Output, string Error)> s_setup = [];

    [ClassInitialize]
    public static void Build(TestContext _)
    {
        s_dir = new TempDirectory();
        var config = VisionTransformerConfig.FromHuggingFaceConfig(ConfigJson, preprocessorConfigJson: PreprocessorJson);
        using (var scope = NewDisposeScope())
        {
            var weights = ModelTestData.RandomWeights(config, seed: 5).ToDictionary(kv => kv.Key, kv => kv.Value.Times(0.5));
            WriteModel("models/base", weights);
            s_experts = Tasks.Select((task, i) =>
            {
                var g = new Generator((ulong)(20 + i));
                return WriteModel($"models/{task}", weights.ToDictionary(kv => kv.Key, kv => kv.Value.Plus(randn(kv.Value.shape, generator: g).Times(0.02))));
            }).ToArray();

            // A head as PyTorch saves an nn.Linear: no metadata, classes are the sub-folders.
            Directory.CreateDirectory(s_dir.File("heads"));
            SafeTensorsWriter.Save(s_dir.File("heads/bands.safetensors"), new Dictionary<string, Tensor>
            {
                ["weight"] = randn([2, config.FeatureDim], generator: new Generator(2)), ["bias"] = randn([2], generator: new Generator(3)),
            });
            SafeTensorsWriter.Save(s_dir.File("bright-classes.safetensors"), new Dictionary<string, Tensor>
            {
                [PoolImport.ClassEmbeddingsName] = randn([2, config.FeatureDim], generator: new Generator(7)),
            });
        }

        DrawTask(s_dir.File("images/colors"), ["blue", "green", "red"], seed: 1);
        DrawTask(s_dir.File("images/bands"), ["horizontal", "vertical"], seed: 2);
        DrawTask(s_dir.File("images/bright"), ["dark", "light"], seed: 3);

        s_pool = s_dir.File("pool");
        s_setup.Add(CliRunner.Run("pool", "create", "--base", s_dir.File("models/base"), "--out", s_pool));
        s_setup.Add(CliRunner.Run("pool", "add", "--zoo", s_pool, "--task", "colors", "--images", s_dir.File("images/colors"), "--expert", s_experts[0], "--probe"));
        s_setup.Add(CliRunner.Run("pool", "add", "--zoo", s_pool, "--task", "bands", "--images", s_dir.File("images/bands"), "--expert", s_experts[1],
            "--head", s_dir.File("heads/bands.safetensors"), "--seed", "4"));
        s_setup.Add(CliRunner.Run("pool", "add", "--zoo", s_pool, "--task", "bright", "--images", s_dir.File("images/bright"), "--expert", s_experts[2],
            "--class-embeddings", s_dir.File("bright-classes.safetensors"), "--copy"));
    }

    [ClassCleanup]
    public static void Cleanup() => s_dir.Dispose();

    [TestMethod]
    public void PoolCreateAndAddRecordTheTasks()
    {
        foreach (var (exit, _, error) in s_setup) Assert.AreEqual(0, exit, error);
        StringAssert.Contains(s_setup[0].Output, "shortest side to 32 (bicubic), centre crop 32×32, RGB");
        var manifest = PoolManifest.Read(s_pool);
        CollectionAssert.AreEqual(Tasks, manifest.Tasks.Select(t => t.Name).ToArray());
        Assert.AreEqual("../models/base", manifest.Pretrained, "the base is kept by reference, relative to the pool");
        Assert.AreEqual(new ImagePreprocessing { ShortestEdge = 32, CropSize = 32 }, manifest.Preprocessing);
        Assert.AreEqual("../models/colors", manifest.Task("colors").Expert);
        Assert.AreEqual("experts/bright.safetensors", manifest.Task("bright").Expert, "--copy puts the expert into the pool");
        Assert.AreEqual(4, manifest.Task("bands").Data!.Seed);
        CollectionAssert.AreEqual(new[] { "blue", "green", "red" }, manifest.Task("colors").ClassNames.ToArray());
        Assert.AreEqual(ClassificationHeadKind.Clip, ModelCheckpoints.LoadHead(Path.Combine(s_pool, manifest.Task("bright").Head)).Kind);
        using (var given = Checkpoint.Open(s_dir.File("heads/bands.safetensors")))
        using (var stored = ModelCheckpoints.LoadHead(Path.Combine(s_pool, manifest.Task("bands").Head), "bands"))
        using (var weight = given.ReadTensor("weight"))
        {
            Assert.IsTrue(ModelTestData.Identical(weight, stored.Weight), "the user's head is stored as given");
            CollectionAssert.AreEqual(new[] { "horizontal", "vertical" }, stored.ClassNames.ToArray());
        }
        foreach (var task in manifest.Tasks) Assert.AreEqual(3, task.Fingerprints.Count, task.Name);
    }

    /// <summary>The recorded accuracies are those of the experts and heads as saved, evaluated independently of pool add.</summary>
    [TestMethod]
    public void RecordedAccuraciesMatchAnIndependentEvaluation()
    {
        using var pool = ExpertPool.Load(s_pool);
        for (int i = 0; i < Tasks.Length; i++)
        {
            using var expert = ModelCheckpoints.LoadBackbone(s_experts[i]);
            var splits = pool.LoadData(Tasks[i]);
            Assert.AreEqual(3, splits.Test.Channels);
            Assert.AreEqual(32, splits.Test.Height);
            double accuracy = ExpertTrainer.Accuracy(expert.Config, expert.Weights, pool.Head(Tasks[i]), splits.Test);
            Assert.AreEqual(pool.Manifest.Task(Tasks[i]).Individual.Test, accuracy, 1e-4, Tasks[i]);
        }

        // The probe of 'colors' (red / green / blue images) separates the classes on the pre-trained features.
        Assert.IsGreaterThanOrEqualTo(0.99, pool.Manifest.Task("colors").PretrainedLinearProbe.Validation);
    }

    /// <summary>Shortest side resized, then the centre cropped: in a 3:1 image of three coloured thirds only the middle one remains.</summary>
    [TestMethod]
    [DataRow(".png", 93, 31)]
    [DataRow(".jpg", 31, 93)]
    public void ImagesAreResizedOnTheShortestSideAndCentreCropped(string extension, int width, int height)
    {
        using var dir = new TempDirectory();
        using var bitmap = new SKBitmap(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int third = width > height ? 3 * x / width : 3 * y / height;
                bitmap.SetPixel(x, y, third switch { 0 => new SKColor(250, 0, 0), 1 => new SKColor(0, 200, 0), _ => new SKColor(0, 0, 240) });
            }
        string path = dir.File("thirds" + extension);
        Save(bitmap, path);

        float[] pixels = PreprocessedImageReader.ReadFiles([path], ImagePreprocessing.Square(32));

        Assert.HasCount(3 * 32 * 32, pixels);
        // Away from the crop's edges (where the cubic filter reaches into the neighbouring thirds): pure green.
        for (int y = 3; y < 29; y++)
            for (int x = 3; x < 29; x++)
            {
                int i = (width > height ? y * 32 + x : x * 32 + y);
                Assert.AreEqual(0, pixels[i], 0.04, $"red at {i}");
                Assert.AreEqual(200 / 255f, pixels[1024 + i], 0.04, $"green at {i}");
                Assert.AreEqual(0, pixels[2048 + i], 0.04, $"blue at {i}");
            }
    }

    /// <summary>A grayscale PNG becomes three equal RGB planes, as CLIP's processor converts it.</summary>
    [TestMethod]
    public void GrayscaleImagesBecomeRgb()
    {
        using var dir = new TempDirectory();
        using var bitmap = new SKBitmap(new SKImageInfo(45, 37, SKColorType.Gray8));
        using (var canvas = new SKCanvas(bitmap)) canvas.Clear(new SKColor(90, 90, 90));
        string path = dir.File("gray.png");
        Save(bitmap, path);

        float[] pixels = PreprocessedImageReader.ReadFiles([path], ImagePreprocessing.Square(32));

        Assert.HasCount(3 * 32 * 32, pixels);
        foreach (float value in pixels) Assert.AreEqual(90 / 255f, value, 1e-6);
    }

    /// <summary>
    /// The pixels and scores of the pool path (TorchSharp, on the images the pool reads) equal those of the ML.NET pipeline a
    /// user saves (LoadImages → ResizeImages → ExtractPixels → MergeExperts → ONNX, via a PredictionEngine), on PNG and JPEG
    /// files of odd sizes; the merged weights are computed here independently (θ0 + 0.3 Σ τ).
    /// </summary>
    [TestMethod]
    public void MlNetPipelineScoresLikeTorchSharpOnFilesOfAnySize()
    {
        using var pool = ExpertPool.Load(s_pool);
        string[] files = Directory.GetFiles(s_dir.File("images/colors"), "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Take(6).ToArray();
        Assert.IsTrue(files.Any(f => f.EndsWith(".jpg", StringComparison.Ordinal)) && files.Any(f => f.EndsWith(".png", StringComparison.Ordinal)));

        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(files.Select(f => new ImageFile { Path = f }));
        var pipeline = ml.Transforms.LoadImages("image", imageFolder: "", nameof(ImageFile.Path))
            .Append(ml.Transforms.ResizeImages("image", 32, 32, "image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"))
            .Append(ml.Transforms.MergeExperts(pool, new MergeExpertsOptions { Method = "task-arithmetic", Task = "colors" }));
        using var model = pipeline.Fit(data);
        var engine = ml.Model.CreatePredictionEngine<ImageFile, ScoredPixels>(model);

        using var scope = NewDisposeScope();
        var merged = pool.Pretrained.ToDictionary(kv => kv.Key,
            kv => kv.Value.Plus(pool.Experts.Select(e => e[kv.Key] - kv.Value).Aggregate((a, b) => a.Plus(b)).Times(0.3)));
        float[] ours = PreprocessedImageReader.ReadFiles(files, pool.Manifest.Preprocessing!);
        var expected = softmax(pool.Head("colors").Forward(VisionTransformer.Forward(pool.Config, merged, tensor(ours, [files.Length, 3, 32, 32]))), 1);
        for (int i = 0; i < files.Length; i++)
        {
            var prediction = engine.Predict(new ImageFile { Path = files[i] });
            float[] mlnetPixels = prediction.Pixels.Select(v => v / 255f).ToArray();
            CollectionAssert.AreEqual(ours.AsSpan(i * mlnetPixels.Length, mlnetPixels.Length).ToArray(), mlnetPixels, $"pixels of {files[i]}");
            double difference = (tensor(prediction.Score) - expected[i]).abs().max().item<float>();
            Assert.IsLessThan(1e-5, difference, $"scores of {files[i]}");
        }
    }

    /// <summary>
    /// WEMoE fitted inside an ML.NET pipeline on image files of every task (the task in a column), saved as a zip and reloaded
    /// in a fresh MLContext: the reloaded PredictionEngine scores each file as the fitted one does, one score column per task.
    /// </summary>
    [TestMethod]
    public void MergeExpertsAdaptsWemoeOnImageFilesAndTheSavedModelScoresAlike()
    {
        using var pool = ExpertPool.Load(s_pool);
        var rows = Tasks.SelectMany(task => Directory.GetFiles(s_dir.File("images/" + task), "*", SearchOption.AllDirectories)
            .Order(StringComparer.Ordinal).Take(8).Select(f => new TaskImageFile { Path = f, Task = task })).ToArray();
        var ml = new MLContext(seed: 1);
        var options = new MergeExpertsOptions { Method = "wemoe", TaskColumnName = nameof(TaskImageFile.Task) };
        options.Parameters["steps"] = "2";
        options.Parameters["batch"] = "4";
        var pipeline = ml.Transforms.LoadImages("image", imageFolder: "", nameof(TaskImageFile.Path))
            .Append(ml.Transforms.ResizeImages("image", 32, 32, "image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"))
            .Append(ml.Transforms.MergeExperts(pool, options));
        using var model = pipeline.Fit(ml.Data.LoadFromEnumerable(rows));
        using var dir = new TempDirectory();
        ml.Model.Save(model, null, dir.File("wemoe.zip"));

        var fresh = new MLContext(seed: 2);
        var reloaded = fresh.Model.Load(dir.File("wemoe.zip"), out _);
        var before = ml.Model.CreatePredictionEngine<TaskImageFile, TaskScores>(model);
        var after = fresh.Model.CreatePredictionEngine<TaskImageFile, TaskScores>(reloaded);
        foreach (var row in rows.Where((_, i) => i % 4 == 0))
        {
            TaskScores a = before.Predict(row), b = after.Predict(row);
            foreach (var (x, y, classes) in new[] { (a.Score_colors, b.Score_colors, 3), (a.Score_bands, b.Score_bands, 2), (a.Score_bright, b.Score_bright, 2) })
            {
                Assert.HasCount(classes, x, row.Path);
                CollectionAssert.AreEqual(x, y, row.Path);
                Assert.AreEqual(1, x.Sum(), 1e-5, "probabilities");
            }
        }
    }

    /// <summary>
    /// A file LoadImages cannot decode fails inside ML.NET's parallel cursor without naming it; Fit names the file, whether it
    /// reads only the first rows (a weight-only method checks the pixel range) or every image (an adaptive method).
    /// </summary>
    [TestMethod]
    [DataRow("task-arithmetic", 2)]
    [DataRow("wemoe", 20)]
    public void AnImageThatDoesNotDecodeIsNamedByFit(string method, int at)
    {
        using var pool = ExpertPool.Load(s_pool);
        using var dir = new TempDirectory();
        string broken = dir.File("not an image.jpg");
        File.WriteAllText(broken, "a caption, saved with the wrong extension");
        var rows = Directory.GetFiles(s_dir.File("images/colors"), "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            .Select(f => new TaskImageFile { Path = f, Task = "colors" }).ToList();
        Assert.IsGreaterThan(at, rows.Count);
        rows.Insert(at, new TaskImageFile { Path = broken, Task = "colors" });
        var ml = new MLContext(seed: 1);
        var options = new MergeExpertsOptions { Method = method, TaskColumnName = nameof(TaskImageFile.Task) };
        if (method == "wemoe") options.Parameters["steps"] = "1";
        var pipeline = ml.Transforms.LoadImages("image", imageFolder: "", nameof(TaskImageFile.Path))
            .Append(ml.Transforms.ResizeImages("image", 32, 32, "image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"))
            .Append(ml.Transforms.MergeExperts(pool, options));

        var error = Assert.ThrowsExactly<InvalidDataException>(() => pipeline.Fit(ml.Data.LoadFromEnumerable(rows)));

        StringAssert.Contains(error.Message, $"MergeExperts: reading input column 'pixels' failed: ML.NET cannot load the image file '{broken}'");
    }

    [TestMethod]
    public void EvalReportsEveryTaskOfThePool()
    {
        var (exit, output, error) = CliRunner.Run("eval", "--model", s_experts[0], "--zoo", s_pool);
        Assert.AreEqual(0, exit, error);
        foreach (string task in Tasks) StringAssert.Contains(output, task);
        double colors = PoolManifest.Read(s_pool).Task("colors").Individual.Test;
        StringAssert.Contains(output, (100 * colors).ToString("F1", CultureInfo.InvariantCulture));
    }

    /// <summary>Every data-dependent method runs on the pool; its result is evaluated on every task.</summary>
    [TestMethod]
    [DataRow("wemoe", "--steps", "2")]
    [DataRow("e-wemoe", "--steps", "2")]
    [DataRow("adamerging-task", "--steps", "2")]
    [DataRow("adamerging-layer", "--steps", "2")]
    [DataRow("fisher", "--examples", "8")]
    [DataRow("regmean", "--examples", "8")]
    public void AdaptThenEval(string method, string option, string value)
    {
        string run = s_dir.File("runs/" + method);
        var (exit, output, error) = CliRunner.Run("adapt", "--zoo", s_pool, "--method", method, option, value, "--out", run);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, $"{method} on 3 tasks");
        (exit, output, error) = CliRunner.Run("eval", "--model", run, "--zoo", s_pool);
        Assert.AreEqual(0, exit, error);
        foreach (string task in Tasks) StringAssert.Contains(output, task);
    }

    /// <summary>WEMoE adapted on the pool, exported with float16 task vectors, scores in ONNX Runtime as the adapted model does.</summary>
    [TestMethod]
    public void WemoeExportsWithFloat16ExpertsAndScoresLikeTheAdaptedModel()
    {
        string run = s_dir.File("runs/wemoe-export");
        var (exit, _, error) = CliRunner.Run("adapt", "--zoo", s_pool, "--method", "wemoe", "--steps", "3", "--out", run);
        Assert.AreEqual(0, exit, error);
        string onnx = s_dir.File("wemoe.onnx");
        (exit, var output, error) = CliRunner.Run("export-onnx", "--model", run, "--zoo", s_pool, "--fp16-experts", "--scores", "logits", "--out", onnx);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "exported WEMoE (3 experts");

        using var pool = ExpertPool.Load(s_pool);
        using var adapted = Microsoft.ML.ModelMerging.Algorithms.AdaptedModel.Load(run, pool);
        using var runner = new OnnxRuntimeRunner(File.ReadAllBytes(onnx));
        using var scope = NewDisposeScope();
        var images = pool.LoadData("bands").Test.ToTensor();
        var outputs = runner.Run("pixels", images.flatten(1));
        var features = adapted.Features(images);
        foreach (string task in Tasks)
        {
            var expected = pool.Head(task).Forward(features);
            // float16 task vectors: the merged MLP weights differ from float32 ones by their rounding.
            Assert.IsLessThan(2e-2, ModelTestData.MaxAbsDiff(outputs["scores_" + task], expected), task);
        }
    }

    [TestMethod]
    public void CompareRanksMethodsOnThePool()
    {
        string output = s_dir.File("compare");
        var (exit, text, error) = CliRunner.Run("compare", "--zoo", s_pool, "--methods", "task-arithmetic,wemoe", "--tta-steps", "2", "--out", output);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(text, "task-arithmetic");
        string json = File.ReadAllText(Path.Combine(output, "leaderboard.json"));
        foreach (string task in Tasks) StringAssert.Contains(json, $"\"{task}\"");
    }

    /// <summary><c>finetune --add-to</c> a Hugging Face pool reads the folder as the pool's preprocessing says, so its data loads again unchanged.</summary>
    [TestMethod]
    public void FinetuneIntoAHuggingFacePoolUsesItsPreprocessing()
    {
        using var dir = new TempDirectory();
        string pool = dir.File("pool");
        Assert.AreEqual(0, CliRunner.Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool).Exit);
        var (exit, _, error) = CliRunner.Run("finetune", "--task", s_dir.File("images/bright"), "--add-to", pool, "--epochs", "1");
        Assert.AreEqual(0, exit, error);
        using var experts = ExpertPool.Load(pool);
        var test = experts.LoadData("bright").Test;
        Assert.AreEqual(3, test.Channels);
        Assert.AreEqual(32, test.Width);
    }

    [TestMethod]
    public void ClassEmbeddingsOfTheWrongShapeAreRefusedNamingFileAndTensor()
    {
        using var dir = new TempDirectory();
        string pool = dir.File("pool");
        Assert.AreEqual(0, CliRunner.Run("pool", "create", "--base", s_dir.File("models/base"), "--out", pool).Exit);
        using (var scope = NewDisposeScope())
            SafeTensorsWriter.Save(dir.File("e.safetensors"), new Dictionary<string, Tensor> { [PoolImport.ClassEmbeddingsName] = zeros(3, 16) });
        var (exit, _, error) = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "bright", "--images", s_dir.File("images/bright"),
            "--expert", s_experts[2], "--class-embeddings", dir.File("e.safetensors"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "e.safetensors");
        StringAssert.Contains(error, PoolImport.ClassEmbeddingsName);
        StringAssert.Contains(error, "expected [2, 16]");
        Assert.IsEmpty(PoolManifest.Read(pool).Tasks);
    }

    [TestMethod]
    public void ApreprocessorThatMLNetCannotReproduceIsRefused()
    {
        using var dir = new TempDirectory();
        string model = dir.File("m");
        Directory.CreateDirectory(model);
        foreach (string file in Directory.GetFiles(s_dir.File("models/base"))) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(model, "preprocessor_config.json"), PreprocessorJson.Replace("\"shortest_edge\": 32", "\"shortest_edge\": 36", StringComparison.Ordinal));
        var (exit, _, error) = CliRunner.Run("pool", "create", "--base", model, "--out", dir.File("pool"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "shortest_edge 36 differs from crop_size 32");
        Assert.IsFalse(Directory.Exists(dir.File("pool")));
    }

    private sealed class TaskImageFile
    {
        public string Path { get; set; } = "";
        public string Task { get; set; } = "";
    }

#pragma warning disable CA1707, IDE1006 // ML.NET binds output columns by property name: Score_<task>.
    private sealed class TaskScores
    {
        public float[] Score_colors { get; set; } = [];
        public float[] Score_bands { get; set; } = [];
        public float[] Score_bright { get; set; } = [];
    }
#pragma warning restore CA1707, IDE1006

    private static string WriteModel(string name, Dictionary<string, Tensor> weights) =>
        HuggingFaceTestModel.Write(s_dir.File(name), weights, ConfigJson, PreprocessorJson);

    internal static void Save(SKBitmap bitmap, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        bool jpeg = path.EndsWith(".jpg", StringComparison.Ordinal);
        using var data = bitmap.Encode(jpeg ? SKEncodedImageFormat.Jpeg : SKEncodedImageFormat.Png, 95);
        File.WriteAllBytes(path, data.ToArray());
    }

    /// <summary>12 images per class of odd sizes (29–90 pixels a side), PNG and JPEG alternately: colours, band orientations or brightness.</summary>
    internal static void DrawTask(string root, string[] classes, int seed)
    {
        var random = new Random(seed);
        foreach (string label in classes)
            for (int i = 0; i < 12; i++)
            {
                int width = 29 + random.Next(62), height = 29 + random.Next(62);
                using var bitmap = new SKBitmap(width, height);
                int period = 6 + random.Next(6);
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++)
                    {
                        int noise = random.Next(40);
                        SKColor color = label switch
                        {
                            "red" => new SKColor((byte)(200 + noise), (byte)noise, (byte)noise),
                            "green" => new SKColor((byte)noise, (byte)(200 + noise), (byte)noise),
                            "blue" => new SKColor((byte)noise, (byte)noise, (byte)(200 + noise)),
                            "horizontal" or "vertical" => (label == "horizontal" ? y : x) % period < period / 2 ? new SKColor(230, 230, 230) : new SKColor(20, 20, 20),
                            "dark" => new SKColor((byte)(20 + noise), (byte)(20 + noise), (byte)(20 + noise)),
                            _ => new SKColor((byte)(200 + noise), (byte)(200 + noise), (byte)(200 + noise)),
                        };
                        bitmap.SetPixel(x, y, color);
                    }
                Save(bitmap, Path.Combine(root, label, $"{i}{(i % 2 == 0 ? ".png" : ".jpg")}"));
            }
    }
}
