namespace Microsoft.ML.ModelMerging.Tests.Merging;

/// <summary>
/// Plain float64 implementations of the merge methods, written from the papers' formulas with loops over arrays,
/// independent of the TorchSharp code under test.
/// </summary>
internal static class MergeReference
{
    public static Dictionary<string, double[]> SimpleAverage(IReadOnlyList<ReferenceTensor> model) =>
        model.ToDictionary(t => t.Name, t => Map(t, j => t.Base[j] + t.TaskVectors.Average(tau => tau[j])));

    public static Dictionary<string, double[]> TaskArithmetic(IReadOnlyList<ReferenceTensor> model, double lambda, double[]? weights = null) =>
        model.ToDictionary(t => t.Name, t => Map(t, j => t.Base[j] + lambda * t.TaskVectors.Select((tau, i) => (weights?[i] ?? 1) * tau[j]).Sum()));

    /// <summary>FusionBench's keep rule: the (⌊keep·n⌋+1)-th largest magnitude, or the smallest when that is all of them.</summary>
    public static double Threshold(IEnumerable<double> values, double keep)
    {
        var magnitudes = values.Select(Math.Abs).OrderByDescending(v => v).ToArray();
        if (magnitudes.Length == 0)
        {
            return 0;
        }

        long kept = (long)Math.Floor(magnitudes.Length * keep);
        return magnitudes[Math.Min(kept, magnitudes.Length - 1)];
    }

    public static (Dictionary<string, double[]> Merged, double[] GlobalThresholds) Ties(
        IReadOnlyList<ReferenceTensor> model, double lambda, double keep, bool global, bool mean)
    {
        int experts = model[0].TaskVectors.Length;
        var globalThresholds = Enumerable.Range(0, experts)
            .Select(i => Threshold(model.SelectMany(t => t.TaskVectors[i]), keep))
            .ToArray();

        var trimmed = model.ToDictionary(t => t.Name, t =>
        {
            var thresholds = global ? globalThresholds : [.. t.TaskVectors.Select(tau => Threshold(tau, keep))];
            return t.TaskVectors.Select((tau, i) => tau.Select(v => Math.Abs(v) >= thresholds[i] ? v : 0).ToArray()).ToArray();
        });
        var elected = model.ToDictionary(t => t.Name, t => Map(t, j => Math.Sign(trimmed[t.Name].Sum(tau => tau[j]))));

        // Zeros of γ take the sign of Σγ over the trim's scope (whole model or tensor); a tie counts as +1.
        double globalMajority = Math.Sign(elected.Values.Sum(gamma => gamma.Sum())) >= 0 ? 1 : -1;
        var merged = new Dictionary<string, double[]>();
        foreach (var t in model)
        {
            double majority = global ? globalMajority : (Math.Sign(elected[t.Name].Sum()) >= 0 ? 1 : -1);
            merged[t.Name] = Map(t, j =>
            {
                double gamma = elected[t.Name][j] == 0 ? majority : elected[t.Name][j];
                double sum = 0;
                int count = 0;
                foreach (var tau in trimmed[t.Name])
                {
                    if (tau[j] * gamma > 0)
                    {
                        sum += tau[j];
                        count++;
                    }
                }

                double combined = mean ? sum / Math.Max(count, 1) : sum;
                return t.Base[j] + lambda * combined;
            });
        }

        return (merged, globalThresholds);
    }

    /// <summary>TALL masks m_t[j] = |τ_t| ≥ λ_t·|τ_MTL − τ_t|, per tensor.</summary>
    public static Dictionary<string, bool[][]> TallMasks(IReadOnlyList<ReferenceTensor> model, double[] tallLambdas) =>
        model.ToDictionary(t => t.Name, t => t.TaskVectors.Select((tau, i) =>
        {
            double lambda = tallLambdas.Length == 1 ? tallLambdas[0] : tallLambdas[i];
            return Enumerable.Range(0, t.Length).Select(j =>
            {
                double multiTask = t.TaskVectors.Sum(other => other[j]);
                return Math.Abs(tau[j]) >= lambda * Math.Abs(multiTask - tau[j]);
            }).ToArray();
        }).ToArray());

    /// <summary>Task t's TALL model: θ0 + m_t ⊙ Σ τ_i.</summary>
    public static Dictionary<string, double[]> TallTaskModel(IReadOnlyList<ReferenceTensor> model, double[] tallLambdas, int task)
    {
        var masks = TallMasks(model, tallLambdas);
        return model.ToDictionary(t => t.Name, t => Map(t, j =>
            t.Base[j] + (masks[t.Name][task][j] ? t.TaskVectors.Sum(tau => tau[j]) : 0)));
    }

    public static Dictionary<string, double[]> Consensus(IReadOnlyList<ReferenceTensor> model, double lambda, double[] tallLambdas, int minTasks)
    {
        var masks = TallMasks(model, tallLambdas);
        return model.ToDictionary(t => t.Name, t => Map(t, j =>
        {
            int votes = masks[t.Name].Count(mask => mask[j]);
            return t.Base[j] + (votes >= minTasks ? lambda * t.TaskVectors.Sum(tau => tau[j]) : 0);
        }));
    }

    /// <summary>EMR: τ_uni, masks, scales λ_t over the whole model, and task models θ0 + λ_t·M_t ⊙ τ_uni.</summary>
    public static (Dictionary<string, double[]> Unified, double[] Scales, Dictionary<string, double[]>[] TaskModels) Emr(IReadOnlyList<ReferenceTensor> model)
    {
        int experts = model[0].TaskVectors.Length;
        var unified = model.ToDictionary(t => t.Name, t => Map(t, j =>
        {
            double sign = Math.Sign(t.TaskVectors.Sum(tau => tau[j]));
            double largest = 0;
            foreach (var tau in t.TaskVectors)
            {
                if (tau[j] * sign > 0)
                {
                    largest = Math.Max(largest, Math.Abs(tau[j]));
                }
            }

            return sign * largest;
        }));

        var scales = new double[experts];
        for (int i = 0; i < experts; i++)
        {
            double taskMagnitude = 0, maskedUnified = 0;
            foreach (var t in model)
            {
                for (int j = 0; j < t.Length; j++)
                {
                    taskMagnitude += Math.Abs(t.TaskVectors[i][j]);
                    if (t.TaskVectors[i][j] * unified[t.Name][j] > 0)
                    {
                        maskedUnified += Math.Abs(unified[t.Name][j]);
                    }
                }
            }

            scales[i] = maskedUnified > 0 ? taskMagnitude / maskedUnified : 1;
        }

        var taskModels = Enumerable.Range(0, experts).Select(i => model.ToDictionary(t => t.Name, t => Map(t, j =>
            t.Base[j] + (t.TaskVectors[i][j] * unified[t.Name][j] > 0 ? scales[i] * unified[t.Name][j] : 0)))).ToArray();
        return (unified, scales, taskModels);
    }

    private static double[] Map(ReferenceTensor tensor, Func<int, double> entry) =>
        [.. Enumerable.Range(0, tensor.Length).Select(entry)];
}
