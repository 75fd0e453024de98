using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Pools;

/// <summary>
/// Issue 18: a pool of CLIP-size inputs (224×224, patch 32, the preprocessing of <c>openai/clip-vit-base-patch32</c>) scored
/// by an ML.NET PredictionEngine on photographs larger than the crop, PNG and JPEG. The transformer is narrow (width 16, one
/// layer) so the test is quick; the image path — resize of the shortest side, centre crop, normalisation, 49 patches — is
/// the ViT-B/32 one.
/// </summary>
[TestClass]
public sealed class ClipSizeImagePipelineTests
{
    private const string ConfigJson = """
        {"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "patch_size": 32, "image_size": 224, "num_channels": 3, "hidden_act": "quick_gelu",
         "layer_norm_eps": 1e-5, "projection_dim": 8}
        """;

    // openai/clip-vit-base-patch32's preprocessor_config.json, as published.
    private const string PreprocessorJson = """
        {"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
        """;

    [TestMethod]
    public void PredictionEngineScoresPhotosLargerThanTheCropLikeTorchSharp()
    {
        using var dir = new TempDirectory();
        var config = VisionTransformerConfig.FromHuggingFaceConfig(ConfigJson, preprocessorConfigJson: PreprocessorJson);
        Assert.AreEqual(224, config.ImageSize);
        using (var scope = NewDisposeScope())
        {
            var weights = ModelTestData.RandomWeights(config, seed: 8).ToDictionary(kv => kv.Key, kv => kv.Value.Times(0.5));
            WriteModel(dir.File("base"), weights);
            var g = new Generator(9);
            WriteModel(dir.File("expert"), weights.ToDictionary(kv => kv.Key, kv => kv.Value.Plus(randn(kv.Value.shape, generator: g).Times(0.02))));
        }

        DrawPhotos(dir.File("images"), ["red", "green", "blue"]);
        string pool = dir.File("pool");
        var create = CliRunner.Run("pool", "create", "--base", dir.File("base"), "--out", pool);
        Assert.AreEqual(0, create.Exit, create.Error);
        StringAssert.Contains(create.Output, "shortest side to 224 (bicubic), centre crop 224×224, RGB");
        var add = CliRunner.Run("pool", "add", "--zoo", pool, "--task", "colors", "--images", dir.File("images"), "--expert", dir.File("expert"), "--probe");
        Assert.AreEqual(0, add.Exit, add.Error);

        using var experts = ExpertPool.Load(pool);
        string[] files = Directory.GetFiles(dir.File("images"), "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Take(6).ToArray();
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(files.Select(f => new ImageFile { Path = f }));
        var pipeline = ml.Transforms.LoadImages("image", imageFolder: "", nameof(ImageFile.Path))
            .Append(ml.Transforms.ResizeImages("image", 224, 224, "image"))
            .Append(ml.Transforms.ExtractPixels("pixels", "image"))
            .Append(ml.Transforms.MergeExperts(experts, new MergeExpertsOptions { Method = "task-arithmetic", Task = "colors" }));
        using var model = pipeline.Fit(data);
        var engine = ml.Model.CreatePredictionEngine<ImageFile, ScoredPixels>(model);

        // Independently: θ0 + 0.3 τ, the pool's own reading of the files, the TorchSharp forward.
        using var scope2 = NewDisposeScope();
        var merged = experts.Pretrained.ToDictionary(kv => kv.Key, kv => kv.Value.Plus((experts.Experts[0][kv.Key] - kv.Value).Times(0.3)));
        float[] ours = PreprocessedImageReader.ReadFiles(files, experts.Manifest.Preprocessing!);
        var expected = softmax(experts.Head("colors").Forward(VisionTransformer.Forward(experts.Config, merged, tensor(ours, [files.Length, 3, 224, 224]))), 1);
        for (int i = 0; i < files.Length; i++)
        {
            var prediction = engine.Predict(new ImageFile { Path = files[i] });
            Assert.HasCount(3 * 224 * 224, prediction.Pixels);
            float[] mlnetPixels = prediction.Pixels.Select(v => v / 255f).ToArray();
            CollectionAssert.AreEqual(ours.AsSpan(i * mlnetPixels.Length, mlnetPixels.Length).ToArray(), mlnetPixels, $"pixels of {files[i]}");
            double difference = (tensor(prediction.Score) - expected[i]).abs().max().item<float>();
            Assert.IsLessThan(1e-5, difference, $"scores of {files[i]}");
        }
    }

    private static void WriteModel(string path, Dictionary<string, Tensor> weights) => HuggingFaceTestModel.Write(path, weights, ConfigJson, PreprocessorJson);

    /// <summary>8 photos per class, 224–400 pixels a side (landscape and portrait), a colour wash with a soft gradient and noise.</summary>
    private static void DrawPhotos(string root, string[] classes)
    {
        var random = new Random(11);
        foreach (string label in classes)
            for (int i = 0; i < 8; i++)
            {
                int width = 224 + random.Next(177), height = 224 + random.Next(177);
                using var bitmap = new SKBitmap(width, height);
                var pixels = new SKColor[width * height];
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++)
                    {
                        int shade = 40 * x / width + random.Next(30);
                        pixels[y * width + x] = label switch
                        {
                            "red" => new SKColor((byte)(170 + shade), (byte)shade, (byte)shade),
                            "green" => new SKColor((byte)shade, (byte)(170 + shade), (byte)shade),
                            _ => new SKColor((byte)shade, (byte)shade, (byte)(170 + shade)),
                        };
                    }
                bitmap.Pixels = pixels;
                string path = Path.Combine(root, label, $"{i}{(i % 2 == 0 ? ".png" : ".jpg")}");
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                using var encoded = bitmap.Encode(i % 2 == 0 ? SKEncodedImageFormat.Png : SKEncodedImageFormat.Jpeg, 95);
                File.WriteAllBytes(path, encoded.ToArray());
            }
    }
}
