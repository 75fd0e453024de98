using System.Globalization;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>How the learning rate changes over the steps of an adaptation run.</summary>
internal enum LearningRateSchedule
{
    /// <summary>The same rate at every step (FusionBench's default).</summary>
    Constant,

    /// <summary>Half a cosine from the rate at step 0 down towards 0: lr·(1 + cos(π·s/S))/2 at step s of S.</summary>
    Cosine,
}

/// <summary>
/// Settings of <see cref="TestTimeAdaptation.Run"/>: Adam on the summed per-task mean entropy, with optional
/// checkpoints to resume from. Start from <see cref="ForWeightEnsembling"/> or <see cref="ForAdaMerging"/>.
/// </summary>
internal sealed record TestTimeAdaptationOptions
{
    public const int DefaultSteps = 1000;
    public const int DefaultBatchSizePerTask = 16;

    /// <summary>Adam's learning rate at step 0.</summary>
    public required double LearningRate { get; init; }

    /// <summary>Total optimisation steps of the run (a resumed run continues up to this count).</summary>
    public int Steps { get; init; } = DefaultSteps;

    /// <summary>Unlabeled images drawn from every task at every step.</summary>
    public int BatchSizePerTask { get; init; } = DefaultBatchSizePerTask;

    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Constant;

    /// <summary>Seed of the batch order: each task's images are visited in a fresh seeded permutation per pass.</summary>
    public long Seed { get; init; }

    public double Beta1 { get; init; } = 0.9;

    public double Beta2 { get; init; } = 0.999;

    public double Epsilon { get; init; } = 1e-8;

    /// <summary>
    /// Where to write checkpoints (.safetensors: adapted parameters, Adam moments, step); null = none. Written
    /// atomically (temporary file, then rename), so an interrupted run leaves the previous complete checkpoint.
    /// </summary>
    public string? CheckpointPath { get; init; }

    /// <summary>
    /// Write a checkpoint after every this many steps, and after the last step; 0 = only after the last step. Needs
    /// <see cref="CheckpointPath"/>.
    /// </summary>
    public int CheckpointEvery { get; init; }

    /// <summary>
    /// Also write a checkpoint once this much time has passed since the last one (or since the start), so a run killed
    /// between step checkpoints loses at most this much work; null = by steps only. Needs <see cref="CheckpointPath"/>.
    /// </summary>
    public TimeSpan? CheckpointInterval { get; init; }

    /// <summary>
    /// A checkpoint to continue from (often the same file as <see cref="CheckpointPath"/>). The run then continues at
    /// the checkpoint's step with its parameters and Adam moments, and ends exactly where an uninterrupted run would.
    /// </summary>
    public string? ResumeFrom { get; init; }

    /// <summary>
    /// Weight β of a routing term added to each task's entropy, for models that route (WEMoE with softmax routing):
    /// β × the mean over blocks and images of −log r_own(x), r_own being the weight the router gives the task's own expert.
    /// Adaptation already knows which task each unlabeled image comes from (it picks the head by it), so this uses no
    /// more than the entropy does; it pulls the routers towards telling the tasks apart where entropy alone settles for
    /// a confident mixture. 0 (default): entropy alone, the paper's objective.
    /// </summary>
    public double TaskRoutingWeight { get; init; }

    /// <summary>
    /// Weight γ of a diversity term subtracted from each task's entropy: γ × the entropy of the batch's mean prediction,
    /// H(mean_b p_b) (the information-maximisation objective of source-free adaptation, e.g. SHOT). Entropy alone is
    /// lowest when every image gets the same confident answer; this term is highest when the batch's answers spread over
    /// the classes, so together they reward answers that are confident and different. 0 (default): entropy alone, the
    /// papers' objective.
    /// </summary>
    public double DiversityWeight { get; init; }

    /// <summary>WEMoE's defaults: Adam lr 1e-4, 1000 steps, 16 images per task per step.</summary>
    public static TestTimeAdaptationOptions ForWeightEnsembling() => new() { LearningRate = 1e-4 };

    /// <summary>AdaMerging's defaults: Adam lr 1e-3, 1000 steps, 16 images per task per step.</summary>
    public static TestTimeAdaptationOptions ForAdaMerging() => new() { LearningRate = 1e-3 };

    /// <summary>The learning rate of step <paramref name="step"/> (0-based).</summary>
    public double LearningRateAt(int step) => Schedule switch
    {
        LearningRateSchedule.Cosine => LearningRate * 0.5 * (1 + Math.Cos(Math.PI * step / Steps)),
        _ => LearningRate,
    };

    /// <summary>Throws an <see cref="ArgumentException"/> naming every invalid setting.</summary>
    public void Validate()
    {
        var errors = new List<string>();
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
        {
            errors.Add($"LearningRate must be a positive finite number (got {Format(LearningRate)})");
        }

        if (Steps <= 0)
        {
            errors.Add($"Steps must be positive (got {Steps})");
        }

        if (!(TaskRoutingWeight >= 0) || double.IsInfinity(TaskRoutingWeight))
        {
            errors.Add($"TaskRoutingWeight must be a non-negative finite number (got {Format(TaskRoutingWeight)})");
        }

        if (!(DiversityWeight >= 0) || double.IsInfinity(DiversityWeight))
        {
            errors.Add($"DiversityWeight must be a non-negative finite number (got {Format(DiversityWeight)})");
        }

        if (BatchSizePerTask <= 0)
        {
            errors.Add($"BatchSizePerTask must be positive (got {BatchSizePerTask})");
        }

        if (!Enum.IsDefined(Schedule))
        {
            errors.Add($"Schedule {(int)Schedule} is not a known schedule");
        }

        if (!(Beta1 >= 0 && Beta1 < 1) || !(Beta2 >= 0 && Beta2 < 1))
        {
            errors.Add($"Beta1 and Beta2 must be in [0, 1) (got {Format(Beta1)}, {Format(Beta2)})");
        }

        if (!(Epsilon >= 0) || double.IsInfinity(Epsilon))
        {
            errors.Add($"Epsilon must be a non-negative finite number (got {Format(Epsilon)})");
        }

        if (CheckpointEvery < 0)
        {
            errors.Add($"CheckpointEvery must be non-negative (got {CheckpointEvery})");
        }

        if (CheckpointEvery > 0 && CheckpointPath is null)
        {
            errors.Add("CheckpointEvery needs a CheckpointPath");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid test-time adaptation options: " + string.Join("; ", errors) + ".");
        }
    }

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);
}
