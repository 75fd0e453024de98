using System.Globalization;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// What AdaMerging's coefficients reach on a pool when the objective is not in the way: the same model (θ0 + Σ λ τ,
/// clamped to [0, 1] unless told otherwise, starting at 0.3), optimiser (Adam, lr 1e-3 unless told otherwise), steps,
/// batch (16 images per task) and batch order as <c>mlmerge adapt --method adamerging-layer|task</c>, with the entropy
/// replaced by the cross-entropy against labels: of the validation split by default (a fit that generalises to the
/// test split it is scored on), or of the test split itself (the images AdaMerging adapts on: an oracle). A diagnostic,
/// not a method: it uses labels AdaMerging does not have. When these fits are high and AdaMerging stays low, the entropy
/// objective is what fails; when they are low too, the coefficient space is.
/// </summary>
internal static class AdaMergingCeiling
{
    public static int Run(string zoo, AdaMergingGranularity granularity, int steps, double learningRate, int batch, bool clamp, bool fitOnTest)
    {
        set_num_threads(1);
        var inv = CultureInfo.InvariantCulture;
        using var pool = ExpertPool.Load(zoo);
        var names = pool.TaskNames;
        using var ada = AdaMerging.Create(pool.Config, pool.Pretrained, pool.Experts,
            new AdaMergingOptions { Granularity = granularity, InitialLambda = AdaMergingOptions.DefaultInitialLambda, ClampCoefficients = clamp });
        var fitted = names.Select(t => fitOnTest ? pool.LoadData(t).Test : pool.LoadData(t).Validation).ToList();
        var images = fitted.Select(v => v.ToTensor()).ToList();
        var labels = fitted.Select(v => v.LabelsToTensor()).ToList();
        var samplers = names.Select((_, t) => new TaskBatchSampler(images[t].shape[0], batch, seed: 0, t)).ToArray();
        var heads = names.Select(pool.Head).ToList();
        foreach (var parameter in heads.SelectMany(h => h.Parameters)) parameter.requires_grad = false;

        using var optimizer = new AdamOptimizer(((IAdaptableModel)ada).AdaptedParameters, 0.9, 0.999, 1e-8);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.ZeroGrad();
            double total = 0;
            for (int t = 0; t < names.Count; t++)
            {
                using var taskScope = NewDisposeScope();
                var indices = tensor(samplers[t].Indices(step));
                Tensor loss = cross_entropy(heads[t].Forward(ada.Forward(images[t].index_select(0, indices))), labels[t].index_select(0, indices));
                loss.backward();
                total += loss.item<float>();
            }

            optimizer.Update(learningRate);
            if ((step + 1) % 100 == 0)
                Console.Error.WriteLine(string.Create(inv, $"{step + 1}/{steps}: summed cross-entropy {total:F3} ({clock.Elapsed.TotalSeconds:F0} s)"));
        }

        var test = new Dictionary<string, double>(StringComparer.Ordinal);
        using (no_grad())
        {
            var merged = ada.MergedWeights();
            for (int t = 0; t < names.Count; t++)
            {
                var data = pool.LoadData(names[t]).Test;
                using var testImages = data.ToTensor();
                using var testLabels = data.LabelsToTensor();
                test[names[t]] = ClassifierEvaluation.Accuracy(
                    x => heads[t].Forward(Models.VisionTransformer.Forward(pool.Config, merged, x)), testImages, testLabels);
            }

            foreach (var tensor in merged.Values) tensor.Dispose();
        }

        images.ForEach(i => i.Dispose());
        labels.ForEach(l => l.Dispose());
        var individual = pool.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        var table = new AccuracyTable(names, individual);
        table.Add("Individual", new TaskAccuracies(individual));
        table.Add(string.Create(inv, $"AdaMerging {(granularity == AdaMergingGranularity.TaskWise ? "task" : "layer")}-wise coefficients fitted to {(fitOnTest ? "test" : "validation")} labels ({steps} steps, lr {learningRate:G3}{(clamp ? "" : ", unclamped")})"),
            new TaskAccuracies(test));
        Console.WriteLine(table.ToMarkdown());
        return 0;
    }
}
