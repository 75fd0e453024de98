// Merges the zoo's experts inside an ML.NET pipeline and scores PNG images from disk with a PredictionEngine.
//
//   MLMERGE_DATA=.data dotnet run --project examples/MergeAndScore -- [--zoo zoos/default] [--out out/merge-and-score]
//       [--method task-arithmetic [--param name=value]... | --leaderboard out/demo/compare/leaderboard.json]
//
// --leaderboard builds the best entry of an `mlmerge compare` run (its method and chosen setting) instead of --method.
// The images: <out>/images/<task>/<n>_<class index>.png. When the folder is empty, three test-split images of every task
// are written there first, at several sizes (the pipeline resizes them). Methods that adapt at test time (wemoe,
// adamerging-*) fit on 64 more unlabeled test images per task, written to <out>/unlabeled. The fitted pipeline is saved as
// <out>/merged.zip (a standard ML.NET model) and reloaded in a fresh MLContext before scoring, as an application would.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using SkiaSharp;

string zoo = Option("--zoo") ?? FindZoo();
string output = Path.GetFullPath(Option("--out") ?? Path.Combine("out", "merge-and-score"));
string? leaderboard = Option("--leaderboard");
MergeCandidate setting = leaderboard is not null
    ? Leaderboard.ReadBestSetting(leaderboard) ?? throw new InvalidDataException($"{leaderboard} has no entry.")
    : new MergeCandidate(Option("--method") ?? "task-arithmetic", Options("--param").Select(p => p.Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : ""));
string imagesDirectory = Path.Combine(output, "images");
string unlabeledDirectory = Path.Combine(output, "unlabeled");
Directory.CreateDirectory(output);

// Small models: one TorchSharp thread is the fastest and leaves a shared machine alone.
TorchSharp.torch.set_num_threads(1);
var clock = Stopwatch.StartNew();
using var experts = ExpertPool.Load(zoo);
int side = experts.Config.ImageSize;
bool gray = experts.Config.Channels == 1;
List<ImageFile> images = Images(experts, imagesDirectory, first: 0, perTask: 3, sizes: [side, 64, 100]);
bool adaptive = MergeAlgorithmRegistry.Default.Get(setting.Method).Needs.HasFlag(AlgorithmNeeds.UnlabeledImages);
// Adaptive methods learn from unlabeled images of every task; the others need none (Fit only reads the schema).
List<ImageFile> fitImages = adaptive ? Images(experts, unlabeledDirectory, first: 3, perTask: 64, sizes: [side]) : images;
Console.WriteLine($"{experts.TaskNames.Count} experts from {zoo}; {images.Count} images in {imagesDirectory}; method {setting}");

// 1. The pipeline: images → pixels at the zoo's size (grayscale for a gray zoo) → merged model. Fit merges the experts and exports the ONNX model.
var ml = new MLContext(seed: 1);
var merge = ml.Transforms.MergeExperts(experts, setting, new MergeExpertsOptions
{
    // Read only by methods that adapt on the unlabeled images (wemoe, adamerging-*): which task each image belongs to.
    TaskColumnName = nameof(ImageFile.Task),
    ModelPath = Path.Combine(output, "merged.onnx"),
});
// Paths are relative to the output folder, so one pipeline loads both image folders.
var pipeline = ml.Transforms.LoadImages("image", output, nameof(ImageFile.Path))
    .Append(ml.Transforms.ResizeImages("image", side, side, "image"))
    .Append<ITransformer>(gray ? ml.Transforms.ConvertToGrayscale("image") : ml.Transforms.CopyColumns("image", "image"))
    .Append(ml.Transforms.ExtractPixels("pixels", "image"))
    .Append(merge)
    // One vector of every task's label and one of every task's scores, so a fixed prediction class fits any zoo.
    .Append(ml.Transforms.Concatenate("Labels", merge.Outputs.Select(o => o.PredictedLabelColumnName).ToArray()))
    .Append(ml.Transforms.Concatenate("Scores", merge.Outputs.Select(o => o.ScoreColumnName).ToArray()));
string zip = Path.Combine(output, "merged.zip");
using (var model = pipeline.Fit(ml.Data.LoadFromEnumerable(fitImages)))
{
    ml.Model.Save(model, null, zip);
}

Console.WriteLine($"merged with {setting}, saved {zip} ({new FileInfo(zip).Length / 1024} KiB) in {clock.Elapsed.TotalSeconds:F1} s");

// 2. An application: a fresh MLContext loads the zip and scores one image at a time.
var app = new MLContext();
ITransformer loaded = app.Model.Load(zip, out _);
using var engine = app.Model.CreatePredictionEngine<ImageFile, Prediction>(loaded);
List<Prediction> predictions = images.Select(engine.Predict).ToList();
(loaded as IDisposable)?.Dispose();

// 3. Per image: the prediction of its own task's head, then every head's label.
Console.WriteLine();
Console.WriteLine($"{"image",-30} {"truth",-12} {"prediction",-12} {"p",5}  every head");
int correct = 0;
for (int i = 0; i < images.Count; i++)
{
    ImageFile image = images[i];
    int task = experts.TaskNames.ToList().IndexOf(image.Task);
    if (task < 0)
    {
        throw new InvalidDataException($"Image folder '{image.Task}' under {imagesDirectory} is not a task of the zoo ({string.Join(", ", experts.TaskNames)}).");
    }

    IReadOnlyList<string> classes = merge.Outputs[task].ClassNames;
    int offset = merge.Outputs.Take(task).Sum(o => o.ClassNames.Count);
    float probability = predictions[i].Scores.Skip(offset).Take(classes.Count).Max();
    string truth = classes[image.Class];
    string predicted = predictions[i].Labels[task];
    correct += predicted == truth ? 1 : 0;
    string size = $"{image.Width}×{image.Height}";
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{image.Path + " " + size,-30} {truth,-12} {predicted,-12} {probability,5:F2}  {string.Join(" ", predictions[i].Labels.Select((l, t) => $"{Short(experts.TaskNames[t])}:{l}"))}"));
}

Console.WriteLine();
Console.WriteLine($"own-task predictions correct: {correct}/{images.Count}; total {clock.Elapsed.TotalSeconds:F1} s");
return 0;

static string Short(string task) => task.Replace("glyph-", "g-", StringComparison.Ordinal);

// Every value of a repeatable option, e.g. --param steps=50 --param lambda=0.3.
IEnumerable<string> Options(string name) => args.Select((a, i) => (a, i)).Where(x => x.a == name && x.i + 1 < args.Length).Select(x => args[x.i + 1]);

string? Option(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

// zoos/default, or zoos/far in a checkout where the default zoo has not been built yet.
static string FindZoo()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        foreach (string name in new[] { "default", "far" })
        {
            string zoo = Path.Combine(dir.FullName, "zoos", name);
            if (File.Exists(Path.Combine(zoo, PoolManifest.FileName))) return zoo;
        }
    }

    throw new DirectoryNotFoundException("No zoo found above the program's folder; pass --zoo <dir>.");
}

// The images of the folder (task folders, then files, ordinal); test-split images first..first+perTask of every task are
// written first when there are none, cycling through the given sizes.
static List<ImageFile> Images(ExpertPool experts, string root, int first, int perTask, int[] sizes)
{
    if (!Directory.Exists(root) || Directory.GetFiles(root, "*.png", SearchOption.AllDirectories).Length == 0)
    {
        foreach (string task in experts.TaskNames)
        {
            ImageDataset test = experts.LoadData(task).Test;
            Directory.CreateDirectory(Path.Combine(root, task));
            for (int i = first; i < first + perTask; i++)
            {
                WritePng(test.Image(i), test.Channels, test.Width, sizes[(i - first) % sizes.Length], Path.Combine(root, task, $"{i}_{test.Labels.Span[i]}.png"));
            }
        }
    }

    var images = new List<ImageFile>();
    foreach (string folder in Directory.GetDirectories(root).Order(StringComparer.Ordinal))
    {
        foreach (string file in Directory.GetFiles(folder, "*.png").Order(StringComparer.Ordinal))
        {
            using var codec = SKCodec.Create(file);
            string name = Path.GetFileNameWithoutExtension(file);
            images.Add(new ImageFile
            {
                Path = Path.GetRelativePath(Path.GetDirectoryName(root)!, file),
                Task = Path.GetFileName(folder),
                Class = int.Parse(name[(name.IndexOf('_') + 1)..], CultureInfo.InvariantCulture),
                Width = codec.Info.Width,
                Height = codec.Info.Height,
            });
        }
    }

    return images;
}

// A gray or RGB (planar) image in [0, 1] as a size×size PNG (nearest-neighbour scaling).
static void WritePng(ReadOnlySpan<float> pixels, int channels, int side, int size, string path)
{
    using var source = new SKBitmap(side, side);
    for (int y = 0; y < side; y++)
    {
        for (int x = 0; x < side; x++)
        {
            int plane = side * side, at = (y * side) + x;
            int g = channels == 3 ? plane : 0;
            source.SetPixel(x, y, new SKColor(
                (byte)MathF.Round(pixels[at] * 255), (byte)MathF.Round(pixels[g + at] * 255), (byte)MathF.Round(pixels[2 * g + at] * 255)));
        }
    }

    using var target = new SKBitmap(size, size);
    using (var canvas = new SKCanvas(target))
    {
        canvas.DrawBitmap(source, SKRect.Create(size, size));
    }

    using var data = target.Encode(SKEncodedImageFormat.Png, 100);
    File.WriteAllBytes(path, data.ToArray());
}

internal sealed class ImageFile
{
    /// <summary>Relative to the output folder.</summary>
    public string Path { get; set; } = "";

    public string Task { get; set; } = "";

    public int Class { get; set; }

    public int Width { get; set; }

    public int Height { get; set; }
}

internal sealed class Prediction
{
    /// <summary>The predicted class name of every task, in the expert set's task order.</summary>
    public string[] Labels { get; set; } = [];

    /// <summary>Every task's class probabilities, concatenated in task order.</summary>
    public float[] Scores { get; set; } = [];
}
