namespace Microsoft.ML.ModelMerging.Training;

/// <summary>Supervised training settings: AdamW with linear warm-up then cosine decay to zero.</summary>
public sealed record TrainingOptions
{
    /// <summary>Passes over the training set (default 5).</summary>
    public int Epochs { get; init; } = 5;
    /// <summary>Examples per step (default 128).</summary>
    public int BatchSize { get; init; } = 128;
    /// <summary>Peak learning rate of AdamW, reached after the warm-up (default 1e-3).</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>AdamW's decoupled weight decay (default 0.05).</summary>
    public double WeightDecay { get; init; } = 0.05;
    /// <summary>Fraction of the steps spent warming the learning rate up from zero.</summary>
    public double WarmupFraction { get; init; } = 0.05;
    /// <summary>Random translation of each batch by up to this many pixels (0 = none): cheap augmentation for small image sets.</summary>
    public int MaxShift { get; init; }
    /// <summary>Seed of the batch order and of the augmentation shifts.</summary>
    public long Seed { get; init; }
    /// <summary>
    /// Fine-tuning of a vision transformer only: the learning rate of every tensor outside the blocks' MLPs, as a multiple
    /// of <see cref="LearningRate"/> (null = 1, the same; 0 = frozen). Below 1 keeps attention and embeddings near the
    /// pre-trained model, as the small learning rates of CLIP fine-tuning do, so task vectors live mostly in the MLPs.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? NonMlpLearningRateScale { get; init; }

    /// <summary>Checks every setting is in range.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        if (Epochs <= 0) throw new ArgumentException($"Epochs must be positive, got {Epochs}.");
        if (BatchSize <= 0) throw new ArgumentException($"BatchSize must be positive, got {BatchSize}.");
        if (!(LearningRate > 0)) throw new ArgumentException($"LearningRate must be positive, got {LearningRate}.");
        if (WeightDecay < 0) throw new ArgumentException($"WeightDecay must be non-negative, got {WeightDecay}.");
        if (WarmupFraction is < 0 or >= 1) throw new ArgumentException($"WarmupFraction must be in [0, 1), got {WarmupFraction}.");
        if (MaxShift < 0) throw new ArgumentException($"MaxShift must be non-negative, got {MaxShift}.");
        if (NonMlpLearningRateScale is double scale && !(scale >= 0)) throw new ArgumentException($"NonMlpLearningRateScale must be non-negative, got {scale}.");
    }

    /// <summary>Learning rate at a step: linear warm-up, then half a cosine down to zero at the last step.</summary>
    public double LearningRateAt(int step, int totalSteps)
    {
        // A training of one step takes it at the full rate: decaying to zero at the last step would leave it untrained.
        if (totalSteps == 1) return LearningRate;
        int warmup = (int)Math.Round(WarmupFraction * totalSteps);
        if (step < warmup) return LearningRate * (step + 1) / warmup;
        double progress = totalSteps - warmup <= 1 ? 1 : (double)(step - warmup) / (totalSteps - warmup - 1);
        return LearningRate * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress)));
    }
}

/// <summary>Reported after every optimisation step.</summary>
public sealed record TrainingProgress(int Step, int TotalSteps, int Epoch, double Loss, double LearningRate);
