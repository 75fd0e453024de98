using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Scoring throughput of the dense merged model (task arithmetic over the zoo) and of the WEMoE upscaled model (every task's
/// head and softmax): ONNX Runtime on the exported model against the TorchSharp eager forward, same images, same thread
/// count, interleaved rounds in one run (the ratios are the figures; absolute rates depend on the machine); WEMoE's latency
/// over the dense model's; ML.NET's row-at-a-time scoring through <c>MergeExperts</c> (Transform and PredictionEngine); the
/// exported file sizes in float32 and float16.
/// Prints Markdown for docs/benchmarks.md.
/// </summary>
internal static class OnnxScoringBenchmark
{
    public static int Run(string zoo, int images = 1024, int threads = 1, int rounds = 5, int[]? batchSizes = null)
    {
        batchSizes ??= [1, 32, 256];
        int torchThreads = get_num_threads();
        set_num_threads(threads);
        try
        {
            return Measure(zoo, images, threads, rounds, batchSizes);
        }
        finally
        {
            set_num_threads(torchThreads);
        }
    }

    /// <summary>A model scored by both runtimes: its ONNX bytes and the TorchSharp eager forward to the features.</summary>
    private sealed record ScoredModel(string Name, byte[] Onnx, Func<Tensor, Tensor> Features, IReadOnlyList<(string Storage, long Bytes)> Sizes);

    private static int Measure(string zoo, int imageCount, int threads, int rounds, int[] batchSizes)
    {
        using var experts = ExpertPool.Load(zoo);
        VisionTransformerConfig config = experts.Config;
        using MergeResult merged = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create("task-arithmetic"),
            experts.Pretrained, experts.Experts, expertNames: experts.TaskNames);
        var heads = experts.TaskNames.Select(t => new OnnxTaskHead(t, experts.Head(t))).ToArray();
        var noFeatures = new VitOnnxExportOptions { IncludeFeatures = false };
        byte[] Dense(OnnxWeightPrecision precision) =>
            new DenseVitOnnxExporter(config, merged.Merged, heads, noFeatures with { WeightPrecision = precision }).Export();

        // WEMoE with freshly initialised 2-layer routers: trained routers have the same shapes, so the same cost.
        using var moe = WeightEnsemblingMoE.Create(config, experts.Pretrained, experts.Experts, new WeightEnsemblingOptions());
        byte[] Upscaled(OnnxWeightPrecision taskVectors) =>
            new WeightEnsemblingOnnxExporter(moe, heads, noFeatures, taskVectors).Export();

        byte[] dense32 = Dense(OnnxWeightPrecision.Float32), moe32 = Upscaled(OnnxWeightPrecision.Float32);
        var models = new[]
        {
            new ScoredModel("dense (task arithmetic)", dense32, images => VisionTransformer.Forward(config, merged.Merged, images),
                [("float32", dense32.Length), ("float16 weights", Dense(OnnxWeightPrecision.Float16).Length)]),
            new ScoredModel("WEMoE (2-layer routers)", moe32, moe.Forward,
                [("float32", moe32.Length), ("float16 task vectors", Upscaled(OnnxWeightPrecision.Float16).Length)]),
        };

        // Seeded images in [0, 1]: the computation does not depend on the content.
        float[] pixels;
        using (var generator = new Generator(20251))
        using (Tensor random = rand([imageCount, config.Channels, config.ImageSize, config.ImageSize], generator: generator))
        {
            pixels = random.data<float>().ToArray();
        }

        int size = config.Channels * config.ImageSize * config.ImageSize;
        using var sessionOptions = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        var sessions = models.Select(m => new InferenceSession(m.Onnx, sessionOptions)).ToArray();
        try
        {
            string[] outputs = sessions[0].OutputNames.ToArray();
            Console.Error.WriteLine($"onnx-scoring: {imageCount} images, {threads} thread(s), {rounds} rounds, batches {string.Join(", ", batchSizes)}");
            var rows = new List<string>();
            var latencyRatios = new List<string>();
            foreach (int batch in batchSizes)
            {
                var ortRates = new List<double>[models.Length];
                for (int m = 0; m < models.Length; m++)
                {
                    CheckSameScores(sessions[m], outputs, models[m].Features, heads, pixels, size, Math.Min(batch, imageCount));
                    OrtImagesPerSecond(sessions[m], outputs, pixels, size, batch, Math.Min(imageCount, 64));   // warm-up
                    TorchImagesPerSecond(models[m].Features, heads, pixels, size, batch, Math.Min(imageCount, 64));
                }

                var ort = models.Select(_ => new List<double>()).ToArray();
                var eager = models.Select(_ => new List<double>()).ToArray();
                for (int round = 0; round < rounds; round++)
                {
                    for (int m = 0; m < models.Length; m++)
                    {
                        ort[m].Add(OrtImagesPerSecond(sessions[m], outputs, pixels, size, batch, imageCount));
                        eager[m].Add(TorchImagesPerSecond(models[m].Features, heads, pixels, size, batch, imageCount));
                    }
                }

                for (int m = 0; m < models.Length; m++)
                {
                    double ratio = Median(ort[m].Zip(eager[m], (o, t) => o / t).ToList());
                    rows.Add(string.Create(CultureInfo.InvariantCulture,
                        $"| {models[m].Name} | {batch} | {Median(ort[m]):F0} | {Median(eager[m]):F0} | {ratio:F2}× |"));
                    Console.Error.WriteLine(rows[^1]);
                }

                // Latency per image is the inverse rate; the per-round ratio cancels the machine's drift between rounds.
                double latency = Median(ort[0].Zip(ort[1], (dense, upscaled) => dense / upscaled).ToList());
                latencyRatios.Add(string.Create(CultureInfo.InvariantCulture, $"| {batch} | {1000 / Median(ort[0]):F3} | {1000 / Median(ort[1]):F3} | {latency:F2}× |"));
            }

            var (transformRate, engineRate) = MlNetImagesPerSecond(experts, pixels, size, Math.Min(imageCount, 512), rounds);

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Zoo models ({experts.TaskNames.Count} heads + softmax), {config.Layers} layers, width {config.Width}, " +
                $"{config.ImageSize}×{config.ImageSize}×{config.Channels}; {threads} thread(s) for both runtimes; median of {rounds} interleaved rounds over {imageCount} images."));
            Console.WriteLine();
            Console.WriteLine("| model | batch | ONNX Runtime images/s | TorchSharp eager images/s | ratio (median of per-round ratios) |");
            Console.WriteLine("|---|---:|---:|---:|---:|");
            rows.ForEach(Console.WriteLine);
            Console.WriteLine();
            Console.WriteLine("| batch | dense ms/image (ONNX Runtime) | WEMoE ms/image | WEMoE / dense latency |");
            Console.WriteLine("|---:|---:|---:|---:|");
            latencyRatios.ForEach(Console.WriteLine);
            Console.WriteLine();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"ML.NET (MergeExperts → OnnxTransformer, dense model, one row per ONNX Runtime call, default session threads): Transform {transformRate:F0} images/s, PredictionEngine {engineRate:F0} images/s."));
            Console.WriteLine();
            Console.WriteLine("| exported model | storage | bytes |");
            Console.WriteLine("|---|---|---:|");
            foreach (ScoredModel model in models)
            {
                foreach (var (storage, bytes) in model.Sizes)
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {model.Name} | {storage} | {bytes:N0} |"));
                }
            }
        }
        finally
        {
            foreach (InferenceSession session in sessions)
            {
                session.Dispose();
            }
        }

        return 0;
    }

    /// <summary>Both runtimes compute the same probabilities (otherwise the timing compares different work).</summary>
    private static void CheckSameScores(InferenceSession session, string[] outputs, Func<Tensor, Tensor> forward,
        OnnxTaskHead[] heads, float[] pixels, int size, int batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var input = OrtValue.CreateTensorValueFromMemory(pixels.AsMemory(0, batch * size).ToArray(), [batch, size]);
        using var results = session.Run(new RunOptions(), [DenseVitOnnxExporter.InputName], [input], outputs);
        Tensor features = forward(tensor(pixels.AsSpan(0, batch * size).ToArray(), [batch, size]));
        for (int i = 0; i < heads.Length; i++)
        {
            float[] expected = softmax(heads[i].Head.Forward(features), 1).data<float>().ToArray();
            int at = Array.IndexOf(outputs, OnnxTaskHead.ScoresOutputName(heads[i].Task));
            ReadOnlySpan<float> actual = results[at].GetTensorDataAsSpan<float>();
            double max = 0;
            for (int j = 0; j < expected.Length; j++)
            {
                max = Math.Max(max, Math.Abs(expected[j] - actual[j]));
            }

            if (max > 1e-4)
            {
                throw new InvalidOperationException($"ONNX Runtime and TorchSharp disagree on task '{heads[i].Task}' by {max}.");
            }
        }
    }

    private static double OrtImagesPerSecond(InferenceSession session, string[] outputs, float[] pixels, int size, int batch, int count)
    {
        using var runOptions = new RunOptions();
        var clock = Stopwatch.StartNew();
        for (int start = 0; start < count; start += batch)
        {
            int n = Math.Min(batch, count - start);
            using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, new Memory<float>(pixels, start * size, n * size), [n, size]);
            using var results = session.Run(runOptions, [DenseVitOnnxExporter.InputName], [input], outputs);
        }

        return count / clock.Elapsed.TotalSeconds;
    }

    private static double TorchImagesPerSecond(Func<Tensor, Tensor> forward, OnnxTaskHead[] heads, float[] pixels, int size, int batch, int count)
    {
        using var noGrad = no_grad();
        using Tensor all = tensor(pixels, [pixels.Length / size, size]);
        var clock = Stopwatch.StartNew();
        for (int start = 0; start < count; start += batch)
        {
            using var scope = NewDisposeScope();
            Tensor features = forward(all.narrow(0, start, Math.Min(batch, count - start)));
            foreach (OnnxTaskHead head in heads)
            {
                softmax(head.Head.Forward(features), 1).data<float>();
            }
        }

        return count / clock.Elapsed.TotalSeconds;
    }

    private sealed class PixelRow
    {
        public float[] Pixels { get; set; } = [];
    }

    private sealed class Labels
    {
        public string[] Values { get; set; } = [];
    }

    private static (double Transform, double Engine) MlNetImagesPerSecond(ExpertPool experts, float[] pixels, int size, int count, int rounds)
    {
        var ml = new MLContext(seed: 1);
        var schema = SchemaDefinition.Create(typeof(PixelRow));
        schema[0].ColumnType = new VectorDataViewType(NumberDataViewType.Single, size);
        schema[0].ColumnName = MergeExpertsOptions.DefaultInputColumnName;
        var rows = Enumerable.Range(0, count).Select(i => new PixelRow { Pixels = pixels.AsSpan(i * size, size).ToArray() }).ToList();
        IDataView data = ml.Data.LoadFromEnumerable(rows, schema);
        var merge = ml.Transforms.MergeExperts(experts, new MergeExpertsOptions { InputRange = PixelRange.Unit });
        using var model = merge.Append(ml.Transforms.Concatenate(nameof(Labels.Values), merge.Outputs.Select(o => o.PredictedLabelColumnName).ToArray())).Fit(data);
        var engine = ml.Model.CreatePredictionEngine<PixelRow, Labels>(model, inputSchemaDefinition: schema);
        var transform = new List<double>();
        var single = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            var clock = Stopwatch.StartNew();
            int scored = ml.Data.CreateEnumerable<Labels>(model.Transform(data), reuseRowObject: true).Count(l => l.Values.Length == merge.Outputs.Count);
            transform.Add(scored / clock.Elapsed.TotalSeconds);
            clock.Restart();
            int predicted = rows.Count(row => engine.Predict(row).Values.Length == merge.Outputs.Count);
            single.Add(predicted / clock.Elapsed.TotalSeconds);
        }

        return (Median(transform), Median(single));
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
