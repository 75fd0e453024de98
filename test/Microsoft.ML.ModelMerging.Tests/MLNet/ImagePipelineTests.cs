using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using Microsoft.ML.Transforms.Image;
using SkiaSharp;
using static Microsoft.ML.ModelMerging.Tests.MLNet.MlNetTestData;

namespace Microsoft.ML.ModelMerging.Tests.MLNet;

/// <summary>
/// Images from disk through ML.NET's image transforms into <c>MergeExperts</c>: PNG files of several tasks and sizes →
/// LoadImages / MLImage → ResizeImages(28, 28) → ConvertToGrayscale → ExtractPixels (defaults: RGB planes, 0..255) → merged model.
/// </summary>
[TestClass]
public sealed class ImagePipelineTests
{
    private static readonly string[] Tasks = ["mnist", "fashion-mnist", "glyph-symbols"];

    private static ExpertPool s_experts = null!;
    private static int s_threads;

    [ClassInitialize]
    public static void LoadZoo(TestContext context)
    {
        s_threads = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        s_experts = ExpertPool.Load(CommittedZoo.Directory);
    }

    [ClassCleanup]
    public static void ReleaseZoo()
    {
        s_experts.Dispose();
        TorchSharp.torch.set_num_threads(s_threads);
    }

    private sealed class ImageFile
    {
        public string Path { get; set; } = "";
    }

    private sealed class InMemoryImage
    {
        // The declared size is only the schema's; ResizeImages accepts any actual size.
        [ImageType(28, 28)]
        public MLImage Image { get; set; } = null!;
    }

    /// <summary>The scores and labels of three tasks.</summary>
    private class TaskScores
    {
        [ColumnName("Score_mnist")]
        public float[] MnistScore { get; set; } = [];

        [ColumnName("PredictedLabel_mnist")]
        public string Mnist { get; set; } = "";

        [ColumnName("Score_fashion-mnist")]
        public float[] FashionScore { get; set; } = [];

        [ColumnName("PredictedLabel_fashion-mnist")]
        public string Fashion { get; set; } = "";

        [ColumnName("Score_glyph-symbols")]
        public float[] SymbolsScore { get; set; } = [];

        [ColumnName("PredictedLabel_glyph-symbols")]
        public string Symbols { get; set; } = "";

        public float[] Score(string task) => task switch { "mnist" => MnistScore, "fashion-mnist" => FashionScore, _ => SymbolsScore };

        public string Label(string task) => task switch { "mnist" => Mnist, "fashion-mnist" => Fashion, _ => Symbols };
    }

    /// <summary>The scores with the pixels ExtractPixels produced for them.</summary>
    private sealed class Prediction : TaskScores
    {
        [ColumnName("pixels")]
        public float[] Pixels { get; set; } = [];
    }

    /// <summary>Writes test-split images of <see cref="Tasks"/> as PNG files of various sizes (nearest-neighbour scaling).</summary>
    private static List<string> WritePngs(TempDirectory dir)
    {
        int[][] sizes = [[28, 28], [56, 56], [40, 32], [97, 120]];
        var paths = new List<string>();
        foreach (string task in Tasks)
        {
            var test = s_experts.LoadData(task).Test;
            for (int i = 0; i < sizes.Length; i++)
            {
                string path = dir.File($"{task}/{i}.png");
                WritePng(test.Image(i), test.Width, test.Height, sizes[i][0], sizes[i][1], path);
                paths.Add(path);
            }
        }

        return paths;
    }

    private static void WritePng(ReadOnlySpan<float> gray, int width, int height, int targetWidth, int targetHeight, string path)
    {
        using var source = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                byte v = (byte)MathF.Round(gray[(y * width) + x] * 255);
                source.SetPixel(x, y, new SKColor(v, v, v, 255));
            }
        }

        using var target = new SKBitmap(new SKImageInfo(targetWidth, targetHeight, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(target))
        {
            canvas.DrawBitmap(source, SKRect.Create(targetWidth, targetHeight));
        }

        using var data = target.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, data.ToArray());
    }

    /// <summary>
    /// ML.NET 6.0.0's ImageAnalytics is compiled against SkiaSharp 3.119: with another major version in the process (which
    /// a dependency of this library could bring in) ExtractPixels throws MissingMethodException on SKBitmap.GetPixelSpan,
    /// whose signature changed between 2.88 and 3.
    /// </summary>
    [TestMethod]
    public void MlNetExtractPixelsRunsNextToThisLibrary()
    {
        var ml = new MLContext(seed: 1);
        using var bitmap = new SKBitmap(28, 28);
        bitmap.Erase(new SKColor(200, 100, 50));
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        var engine = ml.Model.CreatePredictionEngine<InMemoryImage, Pixels1>(
            ml.Transforms.ExtractPixels("p", nameof(InMemoryImage.Image)).Fit(ml.Data.LoadFromEnumerable(Array.Empty<InMemoryImage>())));
        float[] pixels = engine.Predict(new InMemoryImage { Image = MLImage.CreateFromStream(new MemoryStream(data.ToArray())) }).P;
        Assert.AreEqual(3 * 28 * 28, pixels.Length);
        // Planes in RGB order, as ExtractPixels documents.
        Assert.AreEqual(200f, pixels[0]);
        Assert.AreEqual(100f, pixels[28 * 28]);
        Assert.AreEqual(50f, pixels[2 * 28 * 28]);
        Assert.AreEqual(3, typeof(SKBitmap).Assembly.GetName().Version!.Major, "SkiaSharp must stay on the 3.x line ML.NET's ImageAnalytics is built against.");
    }

    private sealed class Pixels1
    {
        [ColumnName("p")]
        public float[] P { get; set; } = [];
    }

    private static EstimatorChain<MergeExpertsTransformer> Pipeline(MLContext ml, IEstimator<ITransformer> load) =>
        load.Append(ml.Transforms.ResizeImages("image", 28, 28, "image"))
            .Append(ml.Transforms.ConvertToGrayscale("image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"))
            .Append(ml.Transforms.MergeExperts(s_experts));

    /// <summary>What the merged model must give for the pixels ExtractPixels produced (the luma of the RGB planes, divided by 255).</summary>
    private static void AssertMatchesTorch(IReadOnlyList<Prediction> predictions, string what)
    {
        using var merged = Merge(s_experts, "task-arithmetic");
        float[][] unit = predictions.Select(p =>
        {
            Assert.HasCount(3 * 28 * 28, p.Pixels);
            return Enumerable.Range(0, 784).Select(i => ((0.299f * p.Pixels[i]) + (0.587f * p.Pixels[784 + i]) + (0.114f * p.Pixels[1568 + i])) / 255f).ToArray();
        }).ToArray();
        foreach (string task in Tasks)
        {
            var head = s_experts.Head(task);
            float[][] expected = TorchProbabilities(s_experts.Config, merged.Merged, head, unit);
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(predictions.Select(p => p.Score(task)).ToArray(), expected), $"{what}: {task}");
            CollectionAssert.AreEqual(expected.Select(e => Predicted(e, head.ClassNames)).ToArray(), predictions.Select(p => p.Label(task)).ToArray(), $"{what}: {task}");
        }
    }

    [TestMethod]
    public void PngFilesOfAnySizeAreScoredLikeTheTorchForwardOnTheExtractedPixels()
    {
        var ml = new MLContext(seed: 1);
        using var dir = new TempDirectory();
        List<string> paths = WritePngs(dir);
        IDataView files = ml.Data.LoadFromEnumerable(paths.Select(p => new ImageFile { Path = p }));
        using var model = Pipeline(ml, ml.Transforms.LoadImages("image", imageFolder: "", nameof(ImageFile.Path))).Fit(files);

        var engine = ml.Model.CreatePredictionEngine<ImageFile, Prediction>(model);
        var predictions = paths.Select(p => engine.Predict(new ImageFile { Path = p })).ToList();
        AssertMatchesTorch(predictions, "PredictionEngine");

        // Batch scoring gives the same.
        var batch = ml.Data.CreateEnumerable<Prediction>(model.Transform(files), reuseRowObject: false).ToList();
        for (int i = 0; i < paths.Count; i++)
        {
            CollectionAssert.AreEqual(predictions[i].Pixels, batch[i].Pixels);
            foreach (string task in Tasks)
            {
                Assert.AreEqual(predictions[i].Label(task), batch[i].Label(task));
                CollectionAssert.AreEqual(predictions[i].Score(task), batch[i].Score(task));
            }
        }
    }

    [TestMethod]
    public void InMemoryImagesScoreLikeImageFilesAndTheSavedModelReloads()
    {
        var ml = new MLContext(seed: 1);
        using var dir = new TempDirectory();
        List<string> paths = WritePngs(dir);
        IDataView files = ml.Data.LoadFromEnumerable(paths.Select(p => new ImageFile { Path = p }));
        List<TaskScores> expected;
        using (var fromFiles = Pipeline(ml, ml.Transforms.LoadImages("image", imageFolder: "", nameof(ImageFile.Path))).Fit(files))
        {
            expected = ml.Data.CreateEnumerable<TaskScores>(fromFiles.Transform(files), reuseRowObject: false).ToList();
        }

        // ML.NET's image transforms dispose the MLImage they read, so every row gets a freshly loaded image and a row reads
        // its image once (asking for the pixels column too would read it twice).
        IDataView Images() => ml.Data.LoadFromEnumerable(paths.Select(p => new InMemoryImage { Image = MLImage.CreateFromFile(p) }));
        string zip = dir.File("model.zip");
        using (var model = Pipeline(ml, ml.Transforms.CopyColumns("image", nameof(InMemoryImage.Image))).Fit(Images()))
        {
            var engine = ml.Model.CreatePredictionEngine<InMemoryImage, TaskScores>(model);
            AssertSame(expected, paths.Select(p => engine.Predict(new InMemoryImage { Image = MLImage.CreateFromFile(p) })).ToList());
            ml.Model.Save(model, null, zip);
        }

        var fresh = new MLContext(seed: 3);
        ITransformer loaded = fresh.Model.Load(zip, out _);
        var reloaded = fresh.Model.CreatePredictionEngine<InMemoryImage, TaskScores>(loaded);
        AssertSame(expected, paths.Select(p => reloaded.Predict(new InMemoryImage { Image = MLImage.CreateFromFile(p) })).ToList());
        AssertSame(expected, fresh.Data.CreateEnumerable<TaskScores>(loaded.Transform(Images()), reuseRowObject: false).ToList());
        (loaded as IDisposable)?.Dispose();
    }

    private static void AssertSame(IReadOnlyList<TaskScores> expected, IReadOnlyList<TaskScores> actual)
    {
        Assert.HasCount(expected.Count, actual);
        for (int i = 0; i < expected.Count; i++)
        {
            foreach (string task in Tasks)
            {
                Assert.AreEqual(expected[i].Label(task), actual[i].Label(task));
                CollectionAssert.AreEqual(expected[i].Score(task), actual[i].Score(task));
            }
        }
    }
}
