using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Zoo;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Scoring throughput of the dense merged model (task arithmetic over the zoo, every task's head and softmax): ONNX Runtime
/// on the exported model against the TorchSharp eager forward, same images, same thread count, interleaved rounds in one
/// run (the ratio is the figure; absolute rates depend on the machine). Also ML.NET's row-at-a-time scoring through
/// <c>MergeExperts</c> (Transform and PredictionEngine) and the exported file sizes in float32 and float16.
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

    private static int Measure(string zoo, int imageCount, int threads, int rounds, int[] batchSizes)
    {
        using var experts = ExpertSet.Load(zoo);
        VisionTransformerConfig config = experts.Config;
        using MergeResult merged = new InMemoryMergeDriver().Merge(MergeMethodRegistry.Default.Create("task-arithmetic"),
            experts.Pretrained, experts.Experts, expertNames: experts.TaskNames);
        var heads = experts.TaskNames.Select(t => new OnnxTaskHead(t, experts.Head(t))).ToArray();
        var exports = new Dictionary<OnnxWeightPrecision, byte[]>();
        foreach (OnnxWeightPrecision precision in new[] { OnnxWeightPrecision.Float32, OnnxWeightPrecision.Float16 })
        {
            exports[precision] = new DenseVitOnnxExporter(config, merged.Merged, heads,
                new VitOnnxExportOptions { WeightPrecision = precision, IncludeFeatures = false }).Export();
        }

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
        using var session = new InferenceSession(exports[OnnxWeightPrecision.Float32], sessionOptions);
        string[] outputs = session.OutputNames.ToArray();

        Console.Error.WriteLine($"onnx-scoring: {imageCount} images, {threads} thread(s), {rounds} rounds, batches {string.Join(", ", batchSizes)}");
        var rows = new List<string>();
        foreach (int batch in batchSizes)
        {
            CheckSameScores(session, outputs, config, merged.Merged, heads, pixels, size, Math.Min(batch, imageCount));
            var ort = new List<double>();
            var eager = new List<double>();
            OrtImagesPerSecond(session, outputs, pixels, size, batch, Math.Min(imageCount, 64));   // warm-up
            TorchImagesPerSecond(config, merged.Merged, heads, pixels, size, batch, Math.Min(imageCount, 64));
            for (int round = 0; round < rounds; round++)
            {
                ort.Add(OrtImagesPerSecond(session, outputs, pixels, size, batch, imageCount));
                eager.Add(TorchImagesPerSecond(config, merged.Merged, heads, pixels, size, batch, imageCount));
            }

            double ratio = Median(ort.Zip(eager, (o, t) => o / t).ToList());
            rows.Add(string.Create(CultureInfo.InvariantCulture,
                $"| {batch} | {Median(ort):F0} | {Median(eager):F0} | {ratio:F2}× |"));
            Console.Error.WriteLine(rows[^1]);
        }

        var (transformRate, engineRate) = MlNetImagesPerSecond(experts, pixels, size, Math.Min(imageCount, 512), rounds);

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Dense merged model (task arithmetic, {experts.TaskNames.Count} heads + softmax), {config.Layers} layers, width {config.Width}, " +
            $"{config.ImageSize}×{config.ImageSize}×{config.Channels}; {threads} thread(s) for both runtimes; median of {rounds} interleaved rounds over {imageCount} images."));
        Console.WriteLine();
        Console.WriteLine("| batch | ONNX Runtime images/s | TorchSharp eager images/s | ratio (median of per-round ratios) |");
        Console.WriteLine("|---:|---:|---:|---:|");
        rows.ForEach(Console.WriteLine);
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ML.NET (MergeExperts → OnnxTransformer, one row per ONNX Runtime call, default session threads): Transform {transformRate:F0} images/s, PredictionEngine {engineRate:F0} images/s."));
        Console.WriteLine();
        Console.WriteLine("| exported model | bytes |");
        Console.WriteLine("|---|---:|");
        foreach (var (precision, bytes) in exports)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {precision} weights | {bytes.Length:N0} |"));
        }

        return 0;
    }

    /// <summary>Both runtimes compute the same probabilities (otherwise the timing compares different work).</summary>
    private static void CheckSameScores(InferenceSession session, string[] outputs, VisionTransformerConfig config,
        IReadOnlyDictionary<string, Tensor> weights, OnnxTaskHead[] heads, float[] pixels, int size, int batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var input = OrtValue.CreateTensorValueFromMemory(pixels.AsMemory(0, batch * size).ToArray(), [batch, size]);
        using var results = session.Run(new RunOptions(), [DenseVitOnnxExporter.InputName], [input], outputs);
        Tensor features = VisionTransformer.Forward(config, weights, tensor(pixels.AsSpan(0, batch * size).ToArray(), [batch, size]));
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

    private static double TorchImagesPerSecond(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, OnnxTaskHead[] heads,
        float[] pixels, int size, int batch, int count)
    {
        using var noGrad = no_grad();
        using Tensor all = tensor(pixels, [pixels.Length / size, size]);
        var clock = Stopwatch.StartNew();
        for (int start = 0; start < count; start += batch)
        {
            using var scope = NewDisposeScope();
            Tensor features = VisionTransformer.Forward(config, weights, all.narrow(0, start, Math.Min(batch, count - start)));
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

    private static (double Transform, double Engine) MlNetImagesPerSecond(ExpertSet experts, float[] pixels, int size, int count, int rounds)
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
