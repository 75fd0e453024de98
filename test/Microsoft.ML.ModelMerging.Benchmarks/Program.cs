using System.Globalization;
using Microsoft.ML.ModelMerging.Benchmarks;

// Benchmarks report figures; they are not tests. Verbs:
//   streaming-merge [--expert-gib 1] [--experts 4] [--work DIR] [--repeat 1] [--methods task-arithmetic,ties] [--prepare-only] [--clean]
//   io-floor --out FILE INPUT...          (the child process StreamingMergeBenchmark measures)
//   zoo-table ZOO [ROW...]                 weight-only methods on the zoo, λ/k chosen on validation (FusionBench table)
//   tta ZOO [--full-steps 1000]            batched per-sample routing vs a per-sample loop, memory per step, full-run time
return args.FirstOrDefault() switch
{
    "streaming-merge" => StreamingMergeBenchmark.Run(BenchmarkArguments.Parse(args[1..])),
    "zoo-table" when args.Length >= 2 => ZooTable.Run(args[1], args[2..]),
    "tta" when args.Length >= 2 => TtaBenchmark.Run(args[1], fullRunSteps: (int)BenchmarkArguments.Parse(args[2..]).GetNumber("full-steps", 1000)),
    "io-floor" => RunIoFloor(BenchmarkArguments.Parse(args[1..])),
    _ => Usage(),
};

static int RunIoFloor(BenchmarkArguments arguments)
{
    IoFloor.Run(arguments.Positional, arguments.Get("out") ?? throw new ArgumentException("io-floor needs --out"));
    return 0;
}

static int Usage()
{
    Console.Error.WriteLine("usage: Microsoft.ML.ModelMerging.Benchmarks streaming-merge [--expert-gib 1] [--experts 4] [--work DIR] [--repeat 1] [--methods task-arithmetic,ties] [--prepare-only] [--clean]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks zoo-table ZOO [ROW...]");
    Console.Error.WriteLine("       Microsoft.ML.ModelMerging.Benchmarks tta ZOO [--full-steps 1000]");
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
