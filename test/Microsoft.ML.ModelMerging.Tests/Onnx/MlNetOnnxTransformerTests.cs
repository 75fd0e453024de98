using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

/// <summary>The exported model runs in ML.NET's own <c>OnnxTransformer</c> (the ML.NET adapter composes it).</summary>
[TestClass]
public sealed class MlNetOnnxTransformerTests
{
    private sealed class PixelRow
    {
        public float[] Pixels { get; set; } = [];
    }

    [TestMethod]
    public void ApplyOnnxModelGivesTheTorchScores()
    {
        using var dir = new TempDirectory();
        using var scope = NewDisposeScope();
        var config = ModelTestData.TinyRgb(layers: 1);
        var weights = ModelTestData.RandomWeights(config, seed: 51);
        using var head = ClassificationHead.CreateLinear(["cat", "dog", "bird"], config.FeatureDim, seed: 52);
        string path = dir.File("model.onnx");
        new DenseVitOnnxExporter(config, weights, [new OnnxTaskHead("animals", head)]).Save(path);

        const int batch = 5;
        Tensor pixels = ModelTestData.Images(config, batch, seed: 53).reshape(batch, -1);
        Tensor expected = softmax(head.Forward(VisionTransformer.Forward(config, weights, pixels)), 1);

        var ml = new MLContext(seed: 1);
        int size = (int)pixels.shape[1];
        var schema = SchemaDefinition.Create(typeof(PixelRow));
        schema[nameof(PixelRow.Pixels)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, size);
        var rows = Enumerable.Range(0, batch).Select(i => new PixelRow { Pixels = pixels[i].data<float>().ToArray() }).ToList();
        IDataView data = ml.Data.LoadFromEnumerable(rows, schema);
        var pipeline = ml.Transforms.CopyColumns("pixels", nameof(PixelRow.Pixels))
            .Append(ml.Transforms.ApplyOnnxModel(["scores_animals"], ["pixels"], path));
        using var transformer = pipeline.Fit(data) as IDisposable;

        IDataView scored = ((ITransformer)transformer!).Transform(data);
        var column = scored.Schema["scores_animals"];
        // ML.NET keeps the output's rank and reads the symbolic batch dimension as 1: Vector<Single, 1, 3>, 3 values a row.
        var vector = (VectorDataViewType)column.Type;
        Assert.AreEqual(NumberDataViewType.Single, vector.ItemType);
        CollectionAssert.AreEqual(new[] { 1, 3 }, vector.Dimensions.ToArray());
        float[][] scores = scored.GetColumn<float[]>(column).ToArray();
        Tensor actual = stack(scores.Select(s => tensor(s)).ToArray());
        Assert.IsLessThanOrEqualTo(1e-4, ModelTestData.MaxAbsDiff(actual, expected));
    }
}
