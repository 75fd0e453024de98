using System.Globalization;
using Microsoft.ML.ModelMerging.DataMerging;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// What <see cref="AdaptationJob"/> runs: the method and its settings. Settings that do not apply to the method are
/// ignored (and not recorded in the manifest). Defaults follow DESIGN §3.
/// </summary>
public sealed record AdaptationJobOptions
{
    public required AdaptationMethod Method { get; init; }

    /// <summary>Test-time adaptation steps [1000].</summary>
    public int Steps { get; init; } = TestTimeAdaptationOptions.DefaultSteps;

    /// <summary>Adam's learning rate; null = the method's default (WEMoE 1e-4, AdaMerging 1e-3).</summary>
    public double? LearningRate { get; init; }

    /// <summary>Unlabeled test images per task per step [16].</summary>
    public int BatchSizePerTask { get; init; } = TestTimeAdaptationOptions.DefaultBatchSizePerTask;

    /// <summary>WEMoE / E-WEMoE router depth: 0, 1 or 2 layers [2].</summary>
    public int RouterDepth { get; init; } = WeightEnsemblingOptions.DefaultRouterDepth;

    /// <summary>E-WEMoE: fraction of every MLP task-vector tensor kept [0.1].</summary>
    public double Keep { get; init; } = WeightEnsemblingOptions.DefaultEfficientKeep;

    /// <summary>WEMoE's task-arithmetic λ (non-MLP tensors, routers' initial output); AdaMerging's initial coefficient [0.3].</summary>
    public double Lambda { get; init; } = WeightEnsemblingOptions.DefaultLambda;

    /// <summary>
    /// WEMoE / E-WEMoE: average the routing weights over each batch, at training and at inference (FusionBench's
    /// <c>batch_reduce</c>; see <see cref="WeightEnsemblingOptions.BatchReduce"/>). Off by default: routing is per sample.
    /// </summary>
    public bool BatchReduce { get; init; }

    /// <summary>Seed of the router initialisation and batch order (TTA), of the choice of training examples (Fisher, RegMean).</summary>
    public int Seed { get; init; }

    /// <summary>Fisher / RegMean: labeled training examples per task [256].</summary>
    public int ExamplesPerTask { get; init; } = FisherMergeOptions.DefaultExamplesPerTask;

    /// <summary>Write a resumable checkpoint every this many steps (and after the last); 0 = only after the last [100].</summary>
    public int CheckpointEvery { get; init; } = 100;

    /// <summary>The learning rate used: <see cref="LearningRate"/> or the method's default.</summary>
    public double EffectiveLearningRate => LearningRate ?? (Method.IsWeightEnsembling()
        ? TestTimeAdaptationOptions.ForWeightEnsembling().LearningRate
        : TestTimeAdaptationOptions.ForAdaMerging().LearningRate);

    /// <summary>Throws an <see cref="ArgumentException"/> naming every invalid setting that applies to the method.</summary>
    public void Validate()
    {
        var errors = new List<string>();
        if (!Enum.IsDefined(Method))
        {
            errors.Add($"Method {(int)Method} is not a known method");
        }
        else if (Method.IsTestTimeAdaptation())
        {
            if (Steps <= 0)
            {
                errors.Add($"Steps must be positive (got {Steps})");
            }

            if (LearningRate is double rate && !(rate > 0 && double.IsFinite(rate)))
            {
                errors.Add($"the learning rate must be a positive finite number (got {Format(rate)})");
            }

            if (BatchSizePerTask <= 0)
            {
                errors.Add($"the batch size must be positive (got {BatchSizePerTask})");
            }

            if (CheckpointEvery < 0)
            {
                errors.Add($"CheckpointEvery must be non-negative (got {CheckpointEvery})");
            }

            if (!double.IsFinite(Lambda))
            {
                errors.Add($"Lambda must be finite (got {Format(Lambda)})");
            }

            if (Method.IsWeightEnsembling() && RouterDepth is < 0 or > 2)
            {
                errors.Add($"the router depth must be 0, 1 or 2 (got {RouterDepth})");
            }

            if (Method == AdaptationMethod.EfficientWeightEnsembling && !(Keep > 0 && Keep <= 1))
            {
                errors.Add($"Keep must be in (0, 1] (got {Format(Keep)})");
            }
        }
        else if (ExamplesPerTask <= 0)
        {
            errors.Add($"ExamplesPerTask must be positive (got {ExamplesPerTask})");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid adaptation options: " + string.Join("; ", errors) + ".");
        }
    }

    /// <summary>
    /// The settings that decide the result, by snake_case name, for the manifest: a run continues only into an output
    /// directory whose recorded settings are these.
    /// </summary>
    public SortedDictionary<string, double> Settings()
    {
        var settings = new SortedDictionary<string, double>(StringComparer.Ordinal) { ["seed"] = Seed };
        if (Method.IsTestTimeAdaptation())
        {
            settings["steps"] = Steps;
            settings["learning_rate"] = EffectiveLearningRate;
            settings["batch_size_per_task"] = BatchSizePerTask;
            settings["lambda"] = Lambda;
            if (Method.IsWeightEnsembling())
            {
                settings["router_depth"] = RouterDepth;
                if (BatchReduce)
                {
                    settings["batch_reduce"] = 1;
                }
            }

            if (Method == AdaptationMethod.EfficientWeightEnsembling)
            {
                settings["keep"] = Keep;
            }
        }
        else
        {
            settings["examples_per_task"] = ExamplesPerTask;
            if (Method == AdaptationMethod.Fisher)
            {
                settings["epsilon"] = FisherMergeOptions.DefaultEpsilon;
            }
            else
            {
                settings["alpha"] = RegMeanMergeOptions.DefaultAlpha;
            }
        }

        return settings;
    }

    /// <summary>The WEMoE / E-WEMoE construction these options describe.</summary>
    public WeightEnsemblingOptions ToWeightEnsemblingOptions() => Method switch
    {
        AdaptationMethod.WeightEnsembling => new WeightEnsemblingOptions { Lambda = Lambda, RouterDepth = RouterDepth, Seed = Seed, BatchReduce = BatchReduce },
        AdaptationMethod.EfficientWeightEnsembling => WeightEnsemblingOptions.Efficient(Keep) with { Lambda = Lambda, RouterDepth = RouterDepth, Seed = Seed, BatchReduce = BatchReduce },
        _ => throw new InvalidOperationException($"{Method.Name()} is not a weight-ensembling method."),
    };

    /// <summary>The test-time adaptation trajectory these options describe (without checkpoint paths).</summary>
    public TestTimeAdaptationOptions ToTestTimeAdaptationOptions() => new()
    {
        LearningRate = EffectiveLearningRate,
        Steps = Steps,
        BatchSizePerTask = BatchSizePerTask,
        Seed = Seed,
    };

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);
}
