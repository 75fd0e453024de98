using System.Globalization;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// WEMoE, E-WEMoE or AdaMerging trained by test-time adaptation on the unlabeled images <c>Fit</c> is given: the summed
/// entropy of each task's head on that task's images (the rows' task comes from
/// <see cref="MergeExpertsOptions.TaskColumnName"/>) is minimised, exactly as <c>mlmerge adapt</c> does on the zoo's test
/// images. WEMoE exports the upscaled model with its routers; AdaMerging exports the merged dense model.
/// </summary>
public sealed class TestTimeAdaptationStrategy : IMergeStrategy
{
    private readonly AdaptationJobOptions _options;

    /// <param name="options">A test-time adaptation method and its settings (steps, learning rate, batch, router depth, ...).</param>
    public TestTimeAdaptationStrategy(AdaptationJobOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!options.Method.IsTestTimeAdaptation())
        {
            throw new ArgumentException(
                $"{options.Method.Name()} learns from labeled training examples, not from the unlabeled images of Fit: run it with `mlmerge adapt` and export the result.",
                nameof(options));
        }

        options.Validate();
        _options = options;
        Settings = options.Settings().ToDictionary(s => s.Key, s => s.Value.ToString("R", CultureInfo.InvariantCulture), StringComparer.Ordinal);
    }

    /// <summary>
    /// The strategy for <paramref name="method"/> (<c>wemoe</c>, <c>e-wemoe</c>, <c>adamerging-task</c>, <c>adamerging-layer</c>)
    /// with <c>name=value</c> settings: <c>steps</c>, <c>learning_rate</c>, <c>batch</c>, <c>router_depth</c>, <c>keep</c>,
    /// <c>lambda</c>, <c>seed</c>, <c>batch_reduce</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown method or setting, or a value that does not parse.</exception>
    public static TestTimeAdaptationStrategy Create(string method, IEnumerable<KeyValuePair<string, string>>? settings = null)
    {
        var options = new AdaptationJobOptions { Method = AdaptationMethods.Parse(method) };
        bool weightEnsembling = options.Method.IsWeightEnsembling();
        foreach (var (rawKey, value) in settings ?? [])
        {
            string key = rawKey.Trim().Replace('-', '_').ToLowerInvariant();
            bool applies = key switch
            {
                "router_depth" or "router_layers" or "batch_reduce" => weightEnsembling,
                "keep" => options.Method == AdaptationMethod.EfficientWeightEnsembling,
                _ => true,
            };
            if (!applies)
            {
                throw new ArgumentException($"Setting '{rawKey}' does not apply to {options.Method.Name()}.");
            }

            options = key switch
            {
                "steps" => options with { Steps = Int(rawKey, value) },
                "learning_rate" or "lr" => options with { LearningRate = Number(rawKey, value) },
                "batch" or "batch_size_per_task" => options with { BatchSizePerTask = Int(rawKey, value) },
                "router_depth" or "router_layers" => options with { RouterDepth = Int(rawKey, value) },
                "keep" => options with { Keep = Number(rawKey, value) },
                "lambda" => options with { Lambda = Number(rawKey, value) },
                "seed" => options with { Seed = Int(rawKey, value) },
                "batch_reduce" => options with { BatchReduce = Flag(rawKey, value) },
                _ => throw new ArgumentException(
                    $"Unknown setting '{rawKey}' for {method}: expected steps, learning_rate, batch, router_depth, keep, lambda, seed or batch_reduce."),
            };
        }

        return new TestTimeAdaptationStrategy(options);
    }

    public string Name => _options.Method.Name();

    public IReadOnlyDictionary<string, string> Settings { get; }

    public bool RequiresUnlabeledImages => true;

    /// <summary>The settings this strategy adapts with.</summary>
    public AdaptationJobOptions Options => _options;

    /// <summary>Reports every adaptation step (synchronously).</summary>
    public IProgress<AdaptationProgress>? Progress { get; init; }

    public MergedModel Merge(MergeStrategyContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var experts = context.Experts;
        var images = context.Images
            ?? throw new InvalidOperationException($"{Name} adapts on unlabeled images, but none were given.");
        if (images.ByTask.Count == 0)
        {
            throw new InvalidOperationException(
                $"{Name} minimises each task head's entropy on that task's images, so it must know every row's task: set MergeExpertsOptions.TaskColumnName " +
                $"to a text column holding one of {string.Join(", ", experts.TaskNames)}.");
        }

        // Only tasks with images contribute to the objective; every expert still takes part in the merge.
        var tasks = experts.TaskNames.Where(images.ByTask.ContainsKey)
            .Select(t => new AdaptationTask(t, images.ByTask[t], experts.Head(t))).ToList();
        TestTimeAdaptationOptions tta = _options.ToTestTimeAdaptationOptions();
        var heads = context.Tasks.Select(t => new OnnxTaskHead(t, experts.Head(t))).ToArray();
        var metadata = new Dictionary<string, string>(context.ExportOptions.Metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (key, value) in WeightEnsemblingRouterFile.TaskMetadata(experts.TaskNames))
        {
            metadata[key] = value;
        }

        VitOnnxExportOptions exportOptions = context.ExportOptions with { Metadata = metadata };
        if (_options.Method.IsWeightEnsembling())
        {
            var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, _options.ToWeightEnsemblingOptions());
            try
            {
                TestTimeAdaptation.Run(moe, tasks, tta, Progress, context.Cancellation);
                return new MergedModel([new MergedModelPart(new WeightEnsemblingOnnxExporter(moe, heads, exportOptions))], [moe]);
            }
            catch
            {
                moe.Dispose();
                throw;
            }
        }

        var granularity = _options.Method == AdaptationMethod.AdaMergingTaskWise ? AdaMergingGranularity.TaskWise : AdaMergingGranularity.LayerWise;
        using var ada = AdaMerging.Create(experts.Config, experts.Pretrained, experts.Experts,
            new AdaMergingOptions { Granularity = granularity, InitialLambda = _options.Lambda });
        TestTimeAdaptation.Run(ada, tasks, tta, Progress, context.Cancellation);
        Dictionary<string, Tensor> merged = ada.MergedWeights();
        var owner = new OwnedTensors(merged.Values);
        try
        {
            return new MergedModel([new MergedModelPart(new DenseVitOnnxExporter(experts.Config, merged, heads, exportOptions))], [owner]);
        }
        catch
        {
            owner.Dispose();
            throw;
        }
    }

    public override string ToString() => Name + " " + string.Join(" ", Settings.Select(s => $"{s.Key}={s.Value}"));

    private static int Int(string key, string value) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int parsed)
            ? parsed
            : throw new ArgumentException($"Setting '{key}' must be an integer (got '{value}').");

    private static bool Flag(string key, string value) => value.Trim().ToLowerInvariant() switch
    {
        "true" or "1" => true,
        "false" or "0" => false,
        _ => throw new ArgumentException($"Setting '{key}' must be true or false (got '{value}')."),
    };

    private static double Number(string key, string value) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed)
            ? parsed
            : throw new ArgumentException($"Setting '{key}' must be a number (got '{value}').");
}
