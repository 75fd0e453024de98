using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Pools;

/// <summary>Model directories in the Hugging Face layout, written by the tests that import a user's CLIP experts.</summary>
internal static class HuggingFaceTestModel
{
    /// <summary>Writes <c>model.safetensors</c>, <c>config.json</c> and <c>preprocessor_config.json</c> into <paramref name="directory"/>.</summary>
    public static string Write(string directory, Dictionary<string, Tensor> weights, string configJson, string preprocessorJson)
    {
        Directory.CreateDirectory(directory);
        SafeTensorsWriter.Save(Path.Combine(directory, "model.safetensors"), weights);
        File.WriteAllText(Path.Combine(directory, "config.json"), configJson);
        File.WriteAllText(Path.Combine(directory, "preprocessor_config.json"), preprocessorJson);
        return directory;
    }
}

/// <summary>An image file as a PredictionEngine input row.</summary>
internal sealed class ImageFile
{
    public string Path { get; set; } = "";
}

/// <summary>What a PredictionEngine gives back: the extracted pixels and the task's scores.</summary>
internal sealed class ScoredPixels
{
    [ColumnName("pixels")]
    public float[] Pixels { get; set; } = [];

    public float[] Score { get; set; } = [];
}
