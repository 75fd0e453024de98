using Microsoft.ML.ModelMerging.Data;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// A contact sheet of a benchmark task's training images (or of the pre-training corpus's setting classes, task
/// <c>settings</c>): one row per class, to look at what a renderer draws.
/// </summary>
internal static class TaskSheet
{
    public static int Run(string task, string output, int perClass, int scale)
    {
        bool settings = task == "settings";
        var splits = settings ? BroadPretrainingCorpus.Load(trainPerClass: perClass, settings: true) : BenchmarkTasks.Get(task).Load();
        int firstClass = settings ? BroadPretrainingCorpus.ClassNames.Count : 0;
        var data = splits.Train;
        int side = data.Width, classes = data.ClassCount - firstClass;
        using var bitmap = new SKBitmap(perClass * side * scale, classes * side * scale);
        var shown = new int[classes];
        for (int i = 0; i < data.Count; i++)
        {
            int label = data.Labels.Span[i] - firstClass;
            if (label < 0 || shown[label] >= perClass) continue;
            float[] image = data.Image(i).ToArray();
            int plane = side * side;
            for (int y = 0; y < side * scale; y++)
                for (int x = 0; x < side * scale; x++)
                {
                    int p = (y / scale) * side + x / scale;
                    byte V(int c) => (byte)(255 * image[(data.Channels == 3 ? c : 0) * plane + p]);
                    bitmap.SetPixel(shown[label] * side * scale + x, label * side * scale + y, new SKColor(V(0), V(1), V(2)));
                }
            shown[label]++;
        }

        using var file = File.Create(output);
        bitmap.Encode(file, SKEncodedImageFormat.Png, 100);
        Console.WriteLine($"{task}: {splits} → {output} (rows: {string.Join(", ", data.ClassNames.Skip(firstClass))})");
        return 0;
    }
}
