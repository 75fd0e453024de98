// Scores images with a model saved by MergeExperts (e.g. the QuickStart's merged.zip) in an application that references
// only ML.NET and ONNX Runtime: the saved pipeline is ML.NET's own transforms and OnnxTransformer.
// Usage: ScoreSavedModel <merged.zip> <image file>...
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: ScoreSavedModel <merged.zip> <image file>...");
    return 2;
}

var ml = new MLContext();
ITransformer model = ml.Model.Load(args[0], out DataViewSchema input);
IDataView images = ml.Data.LoadFromEnumerable(args.Skip(1).Select(path => new ImageRow { Image = MLImage.CreateFromFile(path) }));
IDataView scored = model.Transform(images);
// One PredictedLabel_<task> column per task the model serves (or PredictedLabel when it serves one).
var labelColumns = scored.Schema.Where(c => c.Name.StartsWith("PredictedLabel", StringComparison.Ordinal)).Select(c => c.Name).ToList();
var labels = labelColumns.ToDictionary(c => c, c => scored.GetColumn<string>(c).ToArray());
for (int i = 0; i < args.Length - 1; i++)
{
    Console.WriteLine($"{args[i + 1]}: {string.Join(", ", labelColumns.Select(c => $"{c.Replace("PredictedLabel_", "")}={labels[c][i]}"))}");
}

(model as IDisposable)?.Dispose();
return 0;

internal sealed class ImageRow
{
    // The column name the merging pipeline was fitted with (the QuickStart's); the declared size is only the schema's.
    [ImageType(1, 1)]
    public MLImage Image { get; set; } = null!;
}
