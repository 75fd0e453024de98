using System.Globalization;
using Microsoft.ML.ModelMerging.Benchmarks;
using Microsoft.ML.ModelMerging.Adaptation;

// Benchmarks report figures; they are not tests. Verbs:
//   streaming-merge [--expert-gib 1 | --shape clip-vit-b32] [--experts 4] [--work DIR] [--repeat 1] [--methods task-arithmetic,ties,dare:then=ties] [--prepare-only] [--clean]
//   io-floor --out FILE [--reads 1] INPUT...   (the child process StreamingMergeBenchmark measures)
//   zoo-table ZOO [ROW...]                 weight-only methods on the zoo, λ/k chosen on validation (FusionBench table)
//   tta ZOO [--rounds 5] [--steps-per-round 3] [--full-steps 1000]
//                                          batched per-sample routing vs a per-sample loop, memory per step, full-run time
//   tta-table ZOO LABEL=DIR...             accuracy of `mlmerge adapt` outputs beside the weight-only baselines (FusionBench table)
//   tta-diagnose ZOO [--lambdas 0.3,0.2,0.1] [LABEL=DIR...]
//                                          WEMoE's oracle-routing ceiling, MLP share of the task vectors, entropies, learned routing
//   onnx-scoring ZOO [--images 1024] [--threads 1] [--rounds 5]   ONNX Runtime vs TorchSharp eager, dense and WEMoE; sizes
//   zoo-structure ZOO [--lambda 0.3] [--per-task 500]
//                                          issue 13's four checks: task identity from pre-trained features, oracle routing,
//                                          task arithmetic normalised, experts vs the pre-trained probe
//   align-timing POOL [--seed 1] [--threads 2] [--images 64]
//                                          weight matching of a randomly reordered expert back to the first: time, passes, distance
//   pruned-oracle ZOO [--keeps 0.05,0.1,0.2,0.3,0.5,1] [--lambda 0.3]
//                                          E-WEMoE's oracle routing at each kept fraction of the MLP task vectors
//   adamerging-ceiling ZOO [--granularity layer|task] [--steps 1000] [--lr 1e-3] [--clamp false] [--fit-split validation|test]
//                                          AdaMerging's coefficients fitted to validation labels (cross-entropy, not entropy): what its coefficient space can reach
//   recalibrate-heads ZOO OUT              ZOO's prototype heads with the logit scale that calibrates each task's expert, in a copy of ZOO at OUT
//   nonlocal-table POOL [LABEL=ALIGNED_POOL...] [--examples 256] [--align no] [--statistics channel,token] [--baselines no]
//                                          (no aligned pool given: aligns by weight and by activation matching, unless --align no)
//                                          simple average / TA / TIES × {unaligned, aligned} × {uncorrected, TACT}; distances
//   lora-table ZOO [--out DIR] [--full-timing POOL] [--timing-steps 20]
//                                          issue 15: full / LoRA / L-LoRA experts (ZOO, ZOO/lora, ZOO/l-lora): individual, trainable
//                                          parameters, time, TA and TIES normalised per mode, task-vector cosine heatmaps
//   lora-subsets ZOO [--size 2] [--lambdas 0.1,0.2,0.3,0.5,0.7,1]
//                                          issue 15: LoRA and L-LoRA task arithmetic over every subset of k tasks, dense ΔW and factors
//   task-sheet TASK OUT.png                a PNG of 12 training images per class of a benchmark task (one row per class; TASK settings: the corpus's setting classes)
//   clip-pool [--work DIR] [--experts 8] [--steps 3] [--threads 2] [--images-per-class 60] [--latency-rounds 5]
//                                          a ViT-B/32-size Hugging Face pool through pool create/add, WEMoE adapt, ONNX export, ORT latency
//   clip-tta-steps POOL [--steps 2] [--threads 2]   WEMoE TTA steps in process: wall and CPU time per step
//   fuzz-safetensors [--files 100000] [--seed 1] [--work DIR] [--trace]
//                                          mutated safetensors files through the reader, checked against an independent parse
return args.FirstOrDefault() switch
{
    "streaming-merge" => StreamingMergeBenchmark.Run(BenchmarkArguments.Parse(args[1..])),
    "zoo-table" when args.Length >= 2 => ZooTable.Run(args[1], args[2..]),
    "tta" when args.Length >= 2 => RunTta(args[1], BenchmarkArguments.Parse(args[2..])),
    "tta-table" when args.Length >= 3 => TtaBenchmark.Table(args[1], LabelledRuns(args[2..])),
    "tta-diagnose" when args.Length >= 2 => RunTtaDiagnose(args[1], BenchmarkArguments.Parse(args[2..])),
    "onnx-scoring" when args.Length >= 2 => RunOnnxScoring(args[1], BenchmarkArguments.Parse(args[2..])),
    "io-floor" => RunIoFloor(BenchmarkArguments.Parse(args[1..])),
    "fuzz-safetensors" => RunFuzz(BenchmarkArguments.Parse(args[1..])),
    "recalibrate-heads" when args.Length >= 3 => HeadRecalibration.Run(args[1], args[2]),
    "adamerging-ceiling" when args.Length >= 2 => AdaMergingCeiling.Run(args[1],
        (BenchmarkArguments.Parse(args[2..]).Get("granularity") ?? "layer") switch
        {
            "layer" => AdaMergingGranularity.LayerWise,
            "task" => AdaMergingGranularity.TaskWise,
            var other => throw new ArgumentException($"--granularity must be layer or task, got '{other}'"),
        },
        (int)BenchmarkArguments.Parse(args[2..]).GetNumber("steps", 1000), BenchmarkArguments.Parse(args[2..]).GetNumber("lr", 1e-3), batch: 16,
        clamp: BenchmarkArguments.Parse(args[2..]).Get("clamp") != "false", fitOnTest: BenchmarkArguments.Parse(args[2..]).Get("fit-split") == "test"),
    "align-timing" when args.Length >= 2 => AlignmentTiming.Run(args[1], (int)BenchmarkArguments.Parse(args[2..]).GetNumber("seed", 1),
        (int)BenchmarkArguments.Parse(args[2..]).GetNumber("threads", 2), (int)BenchmarkArguments.Parse(args[2..]).GetNumber("images", 64)),
    "pruned-oracle" when args.Length >= 2 => ZooStructure.RunPrunedOracle(args[1], BenchmarkArguments.Parse(args[2..]).GetNumber("lambda", 0.3),
        (BenchmarkArguments.Parse(args[2..]).Get("keeps") ?? "0.05,0.1,0.2,0.3,0.5,1").Split(',').Select(k => double.Parse(k, CultureInfo.InvariantCulture)).ToArray()),
    "zoo-structure" when args.Length >= 2 => RunZooStructure(args[1], BenchmarkArguments.Parse(args[2..])),
    "nonlocal-table" when args.Length >= 2 => NonLocalTable.Run(args[1], LabelledRuns(BenchmarkArguments.Parse(args[2..]).Positional),
        (int)BenchmarkArguments.Parse(args[2..]).GetNumber("examples", 256), align: BenchmarkArguments.Parse(args[2..]).Get("align") != "no",
        statistics: BenchmarkArguments.Parse(args[2..]).Get("statistics")?.Split(','), baselines: BenchmarkArguments.Parse(args[2..]).Get("baselines") != "no"),
    "lora-table" when args.Length >= 2 => LoraTable.Run(args[1], BenchmarkArguments.Parse(args[2..]).Get("out") ?? "runs/lora-table",
        BenchmarkArguments.Parse(args[2..]).Get("full-timing"), (int)BenchmarkArguments.Parse(args[2..]).GetNumber("timing-steps", 20)),
    "lora-subsets" when args.Length >= 2 => LoraSubsets.Run(args[1], (int)BenchmarkArguments.Parse(args[2..]).GetNumber("size", 2),
        (BenchmarkArguments.Parse(args[2..]).Get("lambdas") ?? "0.1,0.2,0.3,0.5,0.7,1").Split(',')),
    "task-sheet" when args.Length >= 3 => TaskSheet.Run(args[1], args[2], perClass: 12, scale: 3),
    "clip-pool" => RunClipPool(BenchmarkArguments.Parse(args[1..])),
    "clip-tta-steps" when args.Length >= 2 => ClipPoolBenchmark.Steps(args[1], (int)BenchmarkArguments.Parse(args[2..]).GetNumber("steps", 2), (int)BenchmarkArguments.Parse(args[2..]).GetNumber("threads", 2)),
    _ => Usage(),
};

static int RunTta(string zoo, BenchmarkArguments arguments) => TtaBenchmark.Run(zoo,
    rounds: (int)arguments.GetNumber("rounds", 5),
    stepsPerRound: (int)arguments.GetNumber("steps-per-round", 3),
    fullRunSteps: (int)arguments.GetNumber("full-steps", 1000));

static int RunTtaDiagnose(string zoo, BenchmarkArguments arguments)
{
    double[] lambdas = [.. (arguments.Get("lambdas") ?? "0.3,0.2,0.1").Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture))];
    return TtaBenchmark.Diagnose(zoo, lambdas, LabelledRuns(arguments.Positional));
}

// "WEMoE, 2-layer router=runs/wemoe-2": the label may contain '=', a run directory is assumed not to.
static List<(string Label, string Directory)> LabelledRuns(IEnumerable<string> runs) => [.. runs.Select(run =>
{
    int split = run.LastIndexOf('=');
    return split > 0 && split < run.Length - 1
        ? (run[..split], run[(split + 1)..])
        : throw new ArgumentException($"expected LABEL=DIRECTORY (an `mlmerge adapt` output), got '{run}'");
})];

static int RunZooStructure(string zoo, BenchmarkArguments arguments) =>
    ZooStructure.Run(zoo, lambda: arguments.GetNumber("lambda", 0.3), perTask: (int)arguments.GetNumber("per-task", 500));

static int RunIoFloor(BenchmarkArguments arguments)
{
    IoFloor.Run(arguments.Positional, arguments.Get("out") ?? throw new ArgumentException("io-floor needs --out"), (int)arguments.GetNumber("reads", 1));
    return 0;
}

static int RunOnnxScoring(string zoo, BenchmarkArguments arguments) => OnnxScoringBenchmark.Run(zoo,
    images: (int)arguments.GetNumber("images", 1024), threads: (int)arguments.GetNumber("threads", 1), rounds: (int)arguments.GetNumber("rounds", 5));

static int RunClipPool(BenchmarkArguments arguments) => ClipPoolBenchmark.Run(
    arguments.Get("work") ?? Path.Combine(Path.GetTempPath(), "mlmerge-clip-pool-benchmark"),
    experts: (int)arguments.GetNumber("experts", 8), steps: (int)arguments.GetNumber("steps", 3), threads: (int)arguments.GetNumber("threads", 2),
    imagesPerClass: (int)arguments.GetNumber("images-per-class", 60), latencyRounds: (int)arguments.GetNumber("latency-rounds", 5));

static int RunFuzz(BenchmarkArguments arguments)
{
    string work = arguments.Get("work") ?? Path.Combine(Path.GetTempPath(), "mlmerge-fuzz-" + Environment.ProcessId);
    var report = Microsoft.ML.ModelMerging.Benchmarks.Fuzzing.SafeTensorsFuzzer.Run(
        (int)arguments.GetNumber("files", 100_000), (int)arguments.GetNumber("seed", 1), work, log: Console.Out,
        trace: arguments.Has("trace") ? Console.Error : null);
    Console.Write(report.Describe());
    if (arguments.Get("work") is null) Directory.Delete(work, recursive: true);
    return report.Defects.Count == 0 ? 0 : 1;
}

static int Usage()
{
    Console.Error.WriteLine("usage: Microsoft.ML.ModelMerging.Benchmarks streaming-merge [--expert-gib 1 | --shape clip-vit-b32] [--experts 4] [--work DIR] [--repeat 1] [--methods task-arithmetic,ties,dare:then=ties] [--prepare-only] [--clean]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks zoo-table ZOO [ROW...]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks tta ZOO [--rounds 5] [--steps-per-round 3] [--full-steps 1000]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks tta-table ZOO LABEL=DIR...");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks tta-diagnose ZOO [--lambdas 0.3,0.2,0.1] [LABEL=DIR...]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks onnx-scoring ZOO [--images 1024] [--threads 1] [--rounds 5]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks zoo-structure ZOO [--lambda 0.3] [--per-task 500]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks align-timing POOL [--seed 1] [--threads 2] [--images 64]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks pruned-oracle ZOO [--keeps 0.05,0.1,0.2,0.3,0.5,1] [--lambda 0.3]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks adamerging-ceiling ZOO [--granularity layer|task] [--steps 1000] [--lr 1e-3] [--clamp false] [--fit-split validation|test]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks task-sheet TASK OUT.png");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks fuzz-safetensors [--files 100000] [--seed 1] [--work DIR] [--trace]");
    return 2;
}

namespace Microsoft.ML.ModelMerging.Benchmarks
{
    /// <summary><c>--name value</c> pairs, <c>--flag</c>s and positional arguments.</summary>
    internal sealed class BenchmarkArguments
    {
        private readonly Dictionary<string, string?> _named = new(StringComparer.Ordinal);

        public List<string> Positional { get; } = [];

        public static BenchmarkArguments Parse(IReadOnlyList<string> args)
        {
            var parsed = new BenchmarkArguments();
            for (int i = 0; i < args.Count; i++)
            {
                if (!args[i].StartsWith("--", StringComparison.Ordinal))
                {
                    parsed.Positional.Add(args[i]);
                    continue;
                }

                bool hasValue = i + 1 < args.Count && !args[i + 1].StartsWith("--", StringComparison.Ordinal);
                parsed._named[args[i][2..]] = hasValue ? args[++i] : null;
            }

            return parsed;
        }

        public string? Get(string name) => _named.TryGetValue(name, out var value) ? value : null;

        public bool Has(string name) => _named.ContainsKey(name);

        public double GetNumber(string name, double defaultValue) =>
            Get(name) is { } text ? double.Parse(text, CultureInfo.InvariantCulture) : defaultValue;
    }
}
