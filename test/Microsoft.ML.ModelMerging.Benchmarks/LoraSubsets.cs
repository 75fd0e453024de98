using System.Globalization;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Task arithmetic of LoRA and L-LoRA adapters over every subset of k tasks (peta evaluates every combination of 2 to all
/// tasks), on the dense ΔW and on the factors, λ chosen on validation per subset: with fewer tasks the chosen λ is larger,
/// and the products of different tasks' factors that factor-space merging adds to LoRA grow as λ². Prints Markdown.
/// </summary>
internal static class LoraSubsets
{
    public static int Run(string zoo, int size, IReadOnlyList<string> lambdas)
    {
        var modes = new[] { (Mode: FineTuningModes.Lora, Pool: Path.Combine(zoo, "lora")), (Mode: FineTuningModes.LinearizedLora, Pool: Path.Combine(zoo, "l-lora")) };
        var spaces = new[] { LoraMergeSpaces.Delta, LoraMergeSpaces.Factors };
        var tasks = PoolManifest.Read(modes[0].Pool).Tasks.Select(t => t.Name).ToList();
        if (size < 1 || size > tasks.Count) throw new ArgumentException($"--size must be between 1 and the {tasks.Count} tasks, got {size}.");
        var subsets = Combinations(tasks, size).ToList();
        var normalised = new Dictionary<(string Mode, string Space), List<double>>();
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"| tasks | {string.Join(" | ", modes.SelectMany(m => spaces.Select(s => $"{m.Mode} {s}")))} |");
        Console.WriteLine("|---|" + string.Concat(modes.SelectMany(_ => spaces).Select(_ => "---:|")));
        foreach (var subset in subsets)
        {
            var cells = new List<string>();
            foreach (var (mode, poolPath) in modes)
            {
                using var pool = ExpertPool.Load(poolPath, subset);
                var individual = pool.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
                using var evaluator = new CandidateEvaluator(pool);
                foreach (string space in spaces)
                {
                    var grid = lambdas.Select(l => new MergeCandidate("task-arithmetic",
                        new Dictionary<string, string> { ["lambda"] = l, [LoraMergeSpaces.ParameterName] = space })).ToList();
                    var (best, _) = evaluator.SelectOnValidation(grid);
                    double value = best.Test!.NormalizedAverage(individual);
                    (normalised.TryGetValue((mode, space), out var list) ? list : normalised[(mode, space)] = []).Add(value);
                    cells.Add(string.Create(inv, $"{100 * value:F1} (λ {best.Candidate.Parameters["lambda"]})"));
                }
            }
            Console.WriteLine($"| {string.Join(" + ", subset)} | {string.Join(" | ", cells)} |");
        }

        Console.WriteLine(string.Create(inv, $"| **mean over {subsets.Count} subsets** | {string.Join(" | ", modes.SelectMany(m => spaces.Select(s => $"**{100 * normalised[(m.Mode, s)].Average():F1}**")))} |"));
        Console.WriteLine();
        foreach (string space in spaces)
        {
            double gain = normalised[(FineTuningModes.LinearizedLora, space)].Average() - normalised[(FineTuningModes.Lora, space)].Average();
            Console.WriteLine(string.Create(inv, $"L-LoRA − LoRA, task arithmetic on the {space}: {100 * gain:+0.0;-0.0} points normalised (mean over {subsets.Count} subsets of {size} tasks)"));
        }
        return 0;
    }

    private static IEnumerable<List<string>> Combinations(IReadOnlyList<string> items, int size, int start = 0)
    {
        if (size == 0)
        {
            yield return [];
            yield break;
        }
        for (int i = start; i <= items.Count - size; i++)
            foreach (var rest in Combinations(items, size - 1, i + 1))
                yield return [items[i], .. rest];
    }
}
