using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.OnnxRuntime;
using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Issue 18 "Measure": a pool of CLIP ViT-B/32-size experts in the exact Hugging Face layout (random weights: the figures are
/// time, memory and bytes, which do not depend on the values), built and used as a user would, each step a child
/// <c>mlmerge</c> process under GNU time: <c>pool create</c>, <c>pool add --probe</c> per task, <c>adapt --method wemoe</c>
/// (a few steps, batch 16 per task), <c>export-onnx</c> of WEMoE (float32 and float16 experts) and of the dense task-arithmetic
/// merge, then ONNX Runtime latency of both in this process, in interleaved rounds.
/// </summary>
internal static class ClipPoolBenchmark
{
    private const string ConfigJson = """
        {"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
         "num_attention_heads": 12, "patch_size": 32, "image_size": 224, "num_channels": 3, "hidden_act": "quick_gelu",
         "layer_norm_eps": 1e-5, "projection_dim": 512}
        """;

    private const string PreprocessorJson = """
        {"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
         "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}
        """;

    public static int Run(string work, int experts, int steps, int threads, int imagesPerClass, int latencyRounds)
    {
        var inv = CultureInfo.InvariantCulture;
        work = Path.GetFullPath(work);
        Directory.CreateDirectory(work);
        var plan = RandomCheckpoints.ClipVitB32Plan();
        string Model(string name, int expert)
        {
            string directory = Path.Combine(work, "models", name);
            Directory.CreateDirectory(directory);
            RandomCheckpoints.Write(Path.Combine(directory, "model.safetensors"), plan, expert);
            File.WriteAllText(Path.Combine(directory, "config.json"), ConfigJson);
            File.WriteAllText(Path.Combine(directory, "preprocessor_config.json"), PreprocessorJson);
            return directory;
        }

        Log("writing the base and experts (Hugging Face layout)");
        string basePath = Model("base", -1);
        string[] expertPaths = [.. Enumerable.Range(0, experts).Select(e => Model($"expert{e}", e))];
        Log("drawing the image folders");
        string[] folders = [.. Enumerable.Range(0, experts).Select(t => DrawTask(Path.Combine(work, "images", $"task{t}"), imagesPerClass, seed: t))];

        string mlmerge = Path.Combine(AppContext.BaseDirectory, "mlmerge.dll");
        var rows = new List<string>();
        ProcessMeasurement Step(string label, params string[] arguments)
        {
            Log(label);
            var measurement = ProcessMeasurement.Run("dotnet", [mlmerge, .. arguments]);
            if (measurement.ExitCode != 0) Console.Error.WriteLine(measurement.Output);
            rows.Add(string.Create(inv, $"| {label} | {measurement.Seconds:F1} | {measurement.UserSeconds + measurement.SystemSeconds:F1} | {measurement.PeakRssMiB:F0} | {(measurement.ExitCode == 0 ? "ok" : "exit " + measurement.ExitCode)} |"));
            return measurement;
        }

        string pool = Path.Combine(work, "pool");
        if (Directory.Exists(pool)) Directory.Delete(pool, recursive: true);
        Step("pool create", "pool", "create", "--base", basePath, "--out", pool);
        var adds = Enumerable.Range(0, experts).Select(t =>
            Step($"pool add --probe (task {t})", "pool", "add", "--zoo", pool, "--task", $"task{t}", "--images", folders[t], "--expert", expertPaths[t], "--probe")).ToList();

        string wemoe = Path.Combine(work, "runs", "wemoe");
        if (Directory.Exists(wemoe)) Directory.Delete(wemoe, recursive: true);
        var adapt = Step($"adapt --method wemoe --steps {steps} --batch 16", "adapt", "--zoo", pool, "--method", "wemoe", "--steps", steps.ToString(inv),
            "--batch", "16", "--threads", threads.ToString(inv), "--checkpoint-every", "0", "--out", wemoe);
        double adaptingSeconds = adapt.ExitCode == 0 ? AdaptationManifest.Read(wemoe).Result!.Seconds : double.NaN;

        string fp16 = Path.Combine(work, "wemoe-fp16.onnx"), fp32 = Path.Combine(work, "wemoe-fp32.onnx"), dense = Path.Combine(work, "dense.onnx");
        Step("export-onnx WEMoE --fp16-experts", "export-onnx", "--model", wemoe, "--zoo", pool, "--fp16-experts", "--out", fp16);
        var fp32Export = Step("export-onnx WEMoE (float32)", "export-onnx", "--model", wemoe, "--zoo", pool, "--out", fp32);
        string merged = Path.Combine(work, "dense");
        Step("merge --method task-arithmetic", ["merge", "--method", "task-arithmetic", "--base", basePath, .. expertPaths.SelectMany(e => new[] { "--expert", e }), "--out", merged]);
        Step("export-onnx dense (task arithmetic)", "export-onnx", "--model", merged, "--zoo", pool, "--out", dense);

        Console.WriteLine($"CLIP ViT-B/32-size pool, {experts} experts (random weights, Hugging Face layout), {Environment.ProcessorCount} cores, {DateTime.Now:yyyy-MM-dd}");
        Console.WriteLine();
        Console.WriteLine("| step (`mlmerge`, child process) | wall s | CPU s (user + system) | peak RSS MiB | |");
        Console.WriteLine("|---|---:|---:|---:|---|");
        rows.ForEach(Console.WriteLine);
        Console.WriteLine();
        Console.WriteLine(string.Create(inv,
            $"WEMoE TTA: {steps} steps × {experts} tasks × 16 images, {threads} libtorch thread(s): {adaptingSeconds:F1} s adapting = {adaptingSeconds / steps:F1} s per step; peak RSS {adapt.PeakRssMiB:F0} MiB."));
        foreach (var (label, path) in new[] { ("WEMoE, float16 experts", fp16), ("WEMoE, float32", fp32), ("dense task arithmetic", dense) })
            Console.WriteLine(File.Exists(path)
                ? string.Create(inv, $"ONNX size, {label}: {new FileInfo(path).Length:N0} bytes ({new FileInfo(path).Length / (double)(1L << 30):F2} GiB)")
                : $"ONNX size, {label}: not written ({Tail(fp32Export.Output)})");

        if (File.Exists(fp16) && File.Exists(dense))
            Latency(fp16, dense, latencyRounds, threads);
        return 0;
    }

    /// <summary>
    /// WEMoE TTA steps on a pool in this process: one warm-up step, then <paramref name="steps"/> steps each timed in wall and
    /// process CPU time. CPU time is what other processes on a shared machine do not inflate; CPU s / threads is the wall time
    /// the step would take with the cores to itself, if the threads kept them busy.
    /// </summary>
    public static int Steps(string pool, int steps, int threads)
    {
        var inv = CultureInfo.InvariantCulture;
        TorchSharp.torch.set_num_threads(threads);
        using var experts = Pools.ExpertPool.Load(pool);
        Log("loading the test images");
        var tasks = experts.Tasks.Select(t => new Adaptation.AdaptationTask(t.Name, experts.LoadData(t.Name).Test.ToTensor(), experts.Head(t.Name))).ToList();
        Log("building WEMoE");
        using var moe = Adaptation.WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts);
        var options = Adaptation.TestTimeAdaptationOptions.ForWeightEnsembling() with { Steps = 1 };
        var process = Process.GetCurrentProcess();
        var wall = new List<double>();
        var cpu = new List<double>();
        for (int step = 0; step <= steps; step++)
        {
            process.Refresh();
            var cpuStart = process.TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            Adaptation.TestTimeAdaptation.Run(moe, tasks, options with { Seed = step });
            process.Refresh();
            if (step == 0) { Log(string.Create(inv, $"warm-up step {clock.Elapsed.TotalSeconds:F1} s")); continue; }
            wall.Add(clock.Elapsed.TotalSeconds);
            cpu.Add((process.TotalProcessorTime - cpuStart).TotalSeconds);
            Log(string.Create(inv, $"step {step}: {wall[^1]:F1} s wall, {cpu[^1]:F1} s CPU"));
        }

        Console.WriteLine(string.Create(inv,
            $"WEMoE TTA step ({tasks.Count} tasks × {options.BatchSizePerTask} images, {threads} libtorch thread(s)), median of {steps} after a warm-up: {Median(wall):F1} s wall, {Median(cpu):F1} s CPU = {Median(cpu) / threads:F1} s with {threads} free core(s); peak RSS so far {process.PeakWorkingSet64 / (1 << 20):N0} MiB."));
        foreach (var task in tasks) task.Images.Dispose();
        return 0;
    }

    /// <summary>ONNX Runtime latency per image (batch 1) of WEMoE and the dense merge, in interleaved rounds; medians and their ratio.</summary>
    private static void Latency(string wemoe, string dense, int rounds, int threads)
    {
        var inv = CultureInfo.InvariantCulture;
        using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        var load = Stopwatch.StartNew();
        using var denseSession = new InferenceSession(dense, options);
        double denseLoad = load.Elapsed.TotalSeconds;
        load.Restart();
        using var wemoeSession = new InferenceSession(wemoe, options);
        double wemoeLoad = load.Elapsed.TotalSeconds;
        const int size = 3 * 224 * 224, images = 8;
        var random = new Random(1);
        float[] pixels = [.. Enumerable.Range(0, size * images).Select(_ => (float)random.Next(256))];
        double PerImage(InferenceSession session)
        {
            string[] outputs = [.. session.OutputNames];
            using var runOptions = new RunOptions();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < images; i++)
            {
                using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, new Memory<float>(pixels, i * size, size), [1, size]);
                using var results = session.Run(runOptions, [DenseVitOnnxExporter.InputName], [input], outputs);
            }
            return 1000 * clock.Elapsed.TotalSeconds / images;
        }

        PerImage(denseSession);
        PerImage(wemoeSession);
        var denseMs = new List<double>();
        var wemoeMs = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            denseMs.Add(PerImage(denseSession));
            wemoeMs.Add(PerImage(wemoeSession));
            Log(string.Create(inv, $"latency round {round + 1}/{rounds}: dense {denseMs[^1]:F1} ms, WEMoE {wemoeMs[^1]:F1} ms"));
        }

        double d = Median(denseMs), w = Median(wemoeMs);
        Console.WriteLine(string.Create(inv,
            $"ONNX Runtime {threads} thread(s), batch 1, median of {rounds} rounds × {images} images: dense {d:F1} ms/image, WEMoE (fp16 experts) {w:F1} ms/image = {w / d:F2}× dense; session load dense {denseLoad:F1} s, WEMoE {wemoeLoad:F1} s; process peak RSS after both sessions {Environment.WorkingSet / (1 << 20):N0} MiB (working set now)."));
    }

    /// <summary>Two classes of <paramref name="perClass"/> PNG/JPEG images of random sizes (160–480 pixels a side): discs vs bars on random colours.</summary>
    private static string DrawTask(string root, int perClass, int seed)
    {
        var random = new Random(seed);
        foreach (string label in new[] { "discs", "bars" })
        {
            string folder = Path.Combine(root, label);
            Directory.CreateDirectory(folder);
            for (int i = 0; i < perClass; i++)
            {
                string path = Path.Combine(folder, $"{i}{(i % 2 == 0 ? ".jpg" : ".png")}");
                if (File.Exists(path)) continue;
                int width = 160 + random.Next(320), height = 160 + random.Next(320);
                using var bitmap = new SKBitmap(width, height);
                using var canvas = new SKCanvas(bitmap);
                canvas.Clear(new SKColor((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)));
                using var paint = new SKPaint { Color = new SKColor((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)), IsAntialias = true };
                for (int k = 0; k < 4; k++)
                {
                    float x = random.Next(width), y = random.Next(height), r = 10 + random.Next(40);
                    if (label == "discs") canvas.DrawCircle(x, y, r, paint);
                    else canvas.DrawRect(x - r, y - r / 4, 2 * r, r / 2, paint);
                }
                using var data = bitmap.Encode(i % 2 == 0 ? SKEncodedImageFormat.Jpeg : SKEncodedImageFormat.Png, 90);
                File.WriteAllBytes(path, data.ToArray());
            }
        }
        return root;
    }

    private static string Tail(string output) => output.Trim().Split('\n').LastOrDefault()?.Trim() ?? "";

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static void Log(string message) => Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] {message}");
}
