// Quick start: merge the experts of a pool inside an ML.NET image pipeline, save the model as an ML.NET zip, load it
// in a fresh MLContext and predict. Usage: QuickStart [pool directory, default zoos/default] [merge method, default ties]
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Pools;

string poolDirectory = args.Length > 0 ? args[0] : "zoos/default";
string method = args.Length > 1 ? args[1] : "ties";
using var pool = ExpertPool.Load(poolDirectory);
int size = pool.Config.ImageSize;

// Some test images of every task, as in-memory images of their own size (any size works: the pipeline resizes).
var rows = new List<(string Task, string Label, byte[] Bgra, int Width, int Height)>();
foreach (var task in pool.Tasks)
{
    var test = pool.LoadData(task.Name).Test;
    for (int i = 0; i < 20; i++) rows.Add((task.Name, test.ClassNames[test.Labels.Span[i]], ToBgra(test.Image(i), test.Channels, test.Width, test.Height), test.Width, test.Height));
}

// ML.NET's image transforms dispose the images they read, so every pass over the data makes its images afresh.
IEnumerable<ImageRow> Rows() => rows.Select(r => new ImageRow { Task = r.Task, Image = MLImage.CreateFromPixels(r.Width, r.Height, MLPixelFormat.Bgra32, r.Bgra) });

var ml = new MLContext(seed: 1);
IEstimator<ITransformer> pipeline = ml.Transforms.ResizeImages("image", size, size, nameof(ImageRow.Image));
if (pool.Config.Channels == 1) pipeline = pipeline.Append(ml.Transforms.ConvertToGrayscale("image"));
var merge = ml.Transforms.MergeExperts(pool, new MergeExpertsOptions
{
    Method = method,               // any algorithm of `mlmerge merge --list`; adaptive ones learn from the images of Fit
    TaskColumnName = nameof(ImageRow.Task),
});
pipeline = pipeline.Append(ml.Transforms.ExtractPixels("pixels", "image")).Append(merge);

ITransformer model = pipeline.Fit(ml.Data.LoadFromEnumerable(Rows()));
ml.Model.Save(model, null, "merged.zip");                  // no schema: ML.NET cannot save one with an image column
(model as IDisposable)?.Dispose();

// An application: a fresh MLContext, the zip, one prediction per image; each image is scored by its own task's head.
var app = new MLContext();
ITransformer loaded = app.Model.Load("merged.zip", out _);
IDataView scored = loaded.Transform(app.Data.LoadFromEnumerable(Rows()));
var predicted = merge.Outputs.ToDictionary(o => o.Task, o => scored.GetColumn<string>(o.PredictedLabelColumnName).ToArray());
foreach (var task in pool.TaskNames)
{
    var indices = Enumerable.Range(0, rows.Count).Where(i => rows[i].Task == task).ToList();
    int correct = indices.Count(i => predicted[task][i] == rows[i].Label);
    Console.WriteLine($"{task,-16} {correct,2}/{indices.Count} right, e.g. '{rows[indices[0]].Label}' predicted '{predicted[task][indices[0]]}'");
}

Console.WriteLine($"merged by {method}; saved merged.zip ({new FileInfo("merged.zip").Length / 1024} KiB)");
(loaded as IDisposable)?.Dispose();

// Pixels in [0, 1], channel-major (C·H·W) → 8-bit BGRA, the layout MLImage takes.
static byte[] ToBgra(ReadOnlySpan<float> pixels, int channels, int width, int height)
{
    var bgra = new byte[width * height * 4];
    for (int p = 0; p < width * height; p++)
    {
        for (int c = 0; c < 3; c++)
        {
            float value = pixels[(channels == 1 ? 0 : c) * width * height + p];
            bgra[p * 4 + 2 - c] = (byte)Math.Round(255 * Math.Clamp(value, 0, 1));
        }

        bgra[p * 4 + 3] = 255;
    }

    return bgra;
}

internal sealed class ImageRow
{
    public string Task { get; set; } = "";

    [ImageType(1, 1)]
    public MLImage Image { get; set; } = null!;
}
