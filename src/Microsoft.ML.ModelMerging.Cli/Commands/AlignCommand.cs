using System.CommandLine;
using System.Globalization;
using Microsoft.ML.ModelMerging.Alignment;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Runtime;

namespace Microsoft.ML.ModelMerging.Cli.Commands;

// ML.NET declares a namespace Microsoft.ML.Command, which shadows System.CommandLine.Command inside our namespaces.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>mlmerge align --zoo &lt;pool&gt; [--reference &lt;task&gt;] [--seed 0] [--max-iterations 100] --out &lt;aligned pool&gt;</c>:
/// a permutation-aligned copy of a pool (weight matching), which every pool verb then reads.
/// </summary>
internal static class AlignCommand
{
    public static Command Create()
    {
        var zoo = new Option<string>("--zoo") { Description = "The pool to align.", Required = true };
        var reference = new Option<string?>("--reference") { Description = "The task whose expert (or foundation) the others are matched to (default: the pool's first task)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the order in which weight matching visits the permutation groups.", DefaultValueFactory = _ => 0 };
        var maxIterations = new Option<int>("--max-iterations") { Description = "Passes of weight matching at most, per model matched.", DefaultValueFactory = _ => 100 };
        var output = new Option<string>("--out") { Description = "The aligned pool's directory (must not exist or be empty, unless --force).", Required = true };
        var method = new Option<string>("--method")
        {
            Description = "weight-matching (weights only) or activation-matching (correlations of activations on the tasks' training images; better for experts of different initialisations).",
            DefaultValueFactory = _ => PoolAlignment.Method,
        };
        var imagesPerTask = new Option<int>("--images-per-task") { Description = "Activation matching: training images per task.", DefaultValueFactory = _ => 64 };
        var force = new Option<bool>("--force") { Description = "Replace an --out that exists and is not empty (once the new pool is complete)." };
        var command = new Command("align",
            "Permutation-align a pool's experts to one task's by weight or activation matching (Git Re-Basin): the residual stream, each block's MLP " +
            "units and attention heads are reordered without changing what any expert computes. Experts of differently seeded foundations " +
            "(tasks with a foundation) move with their foundation's permutation and the base becomes the mean of the aligned foundations.")
        {
            zoo, reference, method, imagesPerTask, seed, maxIterations, output, force,
        };
        command.SetAction((parse, cancellation) =>
        {
            var writer = parse.InvocationConfiguration.Output;
            int iterations = parse.GetValue(maxIterations);
            if (iterations <= 0)
            {
                throw new ArgumentException($"--max-iterations must be positive (got {iterations}).");
            }

            using var pool = ExpertPool.Load(parse.GetValue(zoo)!);
            var phases = new SynchronousProgress<PoolAlignmentProgress>(p => writer.WriteLine($"[{DateTime.Now:HH:mm:ss}] {p.Stage}"));
            var result = PoolAlignment.Run(pool, parse.GetValue(output)!, new PoolAlignmentOptions
            {
                Reference = parse.GetValue(reference),
                Seed = parse.GetValue(seed),
                MaxIterations = iterations,
                Force = parse.GetValue(force),
                Method = parse.GetValue(method)!,
                ImagesPerTask = parse.GetValue(imagesPerTask),
            }, phases, cancellation);

            string referenceTask = result.Manifest.Alignment!.Reference;
            bool descends = result.Manifest.Alignment.Method == PoolAlignment.Method;
            foreach (var foundation in result.Foundations)
            {
                writer.WriteLine(Describe($"foundation {foundation.Name}", foundation, $"the foundation of {referenceTask}", descends));
            }

            foreach (var expert in result.Experts)
            {
                writer.WriteLine(Describe(expert.Name, expert, referenceTask, descends));
            }

            if (!result.NonLocal && pool.HasPretrained)
            {
                writer.WriteLine("note: the pool's base is copied unchanged. Experts fine-tuned from it were aligned already, and task vectors of permuted " +
                    "experts against it no longer mean what they did; for experts of other initialisations, make a pool without a base " +
                    "(`pool create --no-base-like`) and name each one's `pool add --foundation`: alignment then matches the foundations and the base becomes their aligned mean.");
            }

            writer.WriteLine($"wrote the aligned pool {result.Directory} ({result.Experts.Count} experts aligned to {referenceTask}); " +
                $"use it like any pool, e.g. `mlmerge compare --zoo {MlmergeCommand.Quote(parse.GetValue(output)!)}`");
            return Task.FromResult(0);
        });
        return command;
    }

    private static string Describe(string name, AlignedModel model, string reference, bool descends) =>
        model.Iterations == 0 && model.DistanceBefore == 0
            ? $"{name}: the reference"
            : string.Create(CultureInfo.InvariantCulture,
                $"{name}: L2 distance to {reference} {model.DistanceBefore:F4} → {model.DistanceAfter:F4}") +
              // Activation matching solves each group once; only weight matching's descent has iterations to report.
              (descends ? $" ({model.Iterations} iteration{(model.Iterations == 1 ? "" : "s")}{(model.Converged ? "" : ", stopped at the limit")})" : "");
}
