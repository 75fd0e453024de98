using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.MLNet;

/// <summary>Rows for ML.NET pipelines and the TorchSharp references the ML.NET outputs are checked against.</summary>
internal static class MlNetTestData
{
    public sealed class PixelRow
    {
        public float[] Pixels { get; set; } = [];

        public string Task { get; set; } = "";
    }

    /// <summary>
    /// A data view with a float vector column <paramref name="column"/> of the rows' size and a text column
    /// <paramref name="taskColumn"/> (the rows' task names, empty when none are given). The vector size is the first row's unless given.
    /// </summary>
    public static IDataView Rows(MLContext ml, IReadOnlyList<float[]> pixels, string column = "pixels", IReadOnlyList<string>? tasks = null, string taskColumn = "task", int? size = null)
    {
        var schema = SchemaDefinition.Create(typeof(PixelRow));
        SchemaDefinition.Column pixelsColumn = schema[nameof(PixelRow.Pixels)];
        SchemaDefinition.Column taskColumnDefinition = schema[nameof(PixelRow.Task)];
        pixelsColumn.ColumnType = new VectorDataViewType(NumberDataViewType.Single, size ?? pixels[0].Length);
        pixelsColumn.ColumnName = column;
        taskColumnDefinition.ColumnName = taskColumn;
        var rows = pixels.Select((p, i) => new PixelRow { Pixels = p, Task = tasks?[i] ?? "" }).ToList();
        return ml.Data.LoadFromEnumerable(rows, schema);
    }

    /// <summary>The first <paramref name="count"/> images of a data set, each as C·H·W values in [0, 1].</summary>
    public static float[][] Images(ImageDataset data, int count) =>
        Enumerable.Range(0, Math.Min(count, data.Count)).Select(i => data.Image(i).ToArray()).ToArray();

    /// <summary>Softmax of the head on the TorchSharp forward: what the exported model must compute.</summary>
    public static float[][] TorchProbabilities(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, ClassificationHead head, IReadOnlyList<float[]> unitPixels)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor images = tensor(unitPixels.SelectMany(p => p).ToArray(), [unitPixels.Count, config.Channels, config.ImageSize, config.ImageSize]);
        Tensor probabilities = softmax(head.Forward(VisionTransformer.Forward(config, weights, images)), 1);
        return Enumerable.Range(0, unitPixels.Count).Select(i => probabilities[i].data<float>().ToArray()).ToArray();
    }

    /// <summary>The class name with the highest score (first on ties, like torch and ONNX ArgMax).</summary>
    public static string Predicted(float[] scores, IReadOnlyList<string> classNames)
    {
        int best = 0;
        for (int i = 1; i < scores.Length; i++)
        {
            if (scores[i] > scores[best])
            {
                best = i;
            }
        }

        return classNames[best];
    }

    /// <summary>The same in-memory merge the estimator's weight-only strategy runs.</summary>
    public static MergeResult Merge(ExpertPool experts, string method, params string[] parameters) =>
        new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(parameters)),
            experts.Pretrained, experts.Experts, expertNames: experts.TaskNames);

    public static double MaxAbsDifference(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b)
    {
        Assert.HasCount(a.Count, b);
        double max = 0;
        for (int i = 0; i < a.Count; i++)
        {
            Assert.HasCount(a[i].Length, b[i]);
            for (int j = 0; j < a[i].Length; j++)
            {
                max = Math.Max(max, Math.Abs(a[i][j] - b[i][j]));
            }
        }

        return max;
    }
}
