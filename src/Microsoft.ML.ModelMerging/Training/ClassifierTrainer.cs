using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Training;

/// <summary>
/// Minimises cross-entropy of a classifier over a labelled image tensor, updating only the parameters it is given
/// (so a linear probe trains the head alone and fine-tuning can keep the head frozen).
/// </summary>
internal static class ClassifierTrainer
{
    /// <param name="logits">Maps a batch of images [B,C,H,W] to logits [B,classes]; built from functional forwards.</param>
    /// <param name="trainable">The parameters to update; every other tensor the forward reads stays as it is.</param>
    /// <param name="images">All training images [N,C,H,W] on the training device.</param>
    /// <param name="labels">Class indices [N] (int64).</param>
    /// <param name="options">Epochs, batch size, learning-rate schedule, weight decay, augmentation and seed.</param>
    /// <param name="progress">Receives a report per step; optional.</param>
    /// <param name="cancellation">Stops the training between steps.</param>
    /// <returns>Mean loss over the last epoch.</returns>
    public static double Train(Func<Tensor, Tensor> logits, IReadOnlyList<Parameter> trainable, Tensor images, Tensor labels,
        TrainingOptions options, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default) =>
        Train(logits, [new ParameterGroup(trainable)], images, labels, options, progress, cancellation);

    /// <summary>Trains several groups of parameters, each at its own multiple of the scheduled learning rate.</summary>
    public static double Train(Func<Tensor, Tensor> logits, IReadOnlyList<ParameterGroup> groups, Tensor images, Tensor labels,
        TrainingOptions options, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        groups = groups.Where(g => g.Parameters.Count > 0).ToList();
        if (groups.Count == 0) throw new ArgumentException("Nothing to train: no parameters were given.");
        foreach (var g in groups)
            if (!(g.LearningRateScale > 0)) throw new ArgumentException($"A parameter group's learning-rate scale must be positive, got {g.LearningRateScale}.");
        long n = images.shape[0];
        if (labels.shape[0] != n) throw new ArgumentException($"{n} images but {labels.shape[0]} labels.");
        int batchesPerEpoch = (int)((n + options.BatchSize - 1) / options.BatchSize);
        int totalSteps = batchesPerEpoch * options.Epochs;
        var generator = new Generator(unchecked((ulong)options.Seed));
        using var optimizer = new AdamWOptimizer(groups.Select(g => (g.Parameters, options.LearningRate * g.LearningRateScale)), options.WeightDecay);
        double lastEpochLoss = double.NaN;
        int step = 0;
        for (int epoch = 0; epoch < options.Epochs; epoch++)
        {
            using var order = randperm(n, generator: generator, device: images.device);
            double epochLoss = 0;
            for (int b = 0; b < batchesPerEpoch; b++, step++)
            {
                cancellation.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                double lr = options.LearningRateAt(step, totalSteps);
                int g = 0;
                foreach (var group in optimizer.Groups) group.LearningRate = lr * groups[g++].LearningRateScale;
                var index = order.narrow(0, (long)b * options.BatchSize, Math.Min(options.BatchSize, n - (long)b * options.BatchSize));
                var batch = images.index_select(0, index);
                if (options.MaxShift > 0) batch = Shift(batch, options.MaxShift, generator);
                var loss = nn.functional.cross_entropy(logits(batch), labels.index_select(0, index));
                optimizer.ZeroGrad();
                loss.backward();
                optimizer.Step();
                double value = loss.item<float>();
                epochLoss += value;
                progress?.Report(new TrainingProgress(step + 1, totalSteps, epoch, value, lr));
            }
            lastEpochLoss = epochLoss / batchesPerEpoch;
        }
        return lastEpochLoss;
    }

    /// <summary>Translates the whole batch by one random offset (zero fill): augmentation without a per-sample loop.</summary>
    private static Tensor Shift(Tensor batch, int maxShift, Generator generator)
    {
        using var offsets = randint(-maxShift, maxShift + 1, new long[] { 2 }, generator: generator);
        long dy = offsets[0].item<long>(), dx = offsets[1].item<long>();
        if (dy == 0 && dx == 0) return batch;
        long h = batch.shape[2], w = batch.shape[3];
        var padded = nn.functional.pad(batch, new long[] { maxShift, maxShift, maxShift, maxShift });
        return padded.narrow(2, maxShift - dy, h).narrow(3, maxShift - dx, w);
    }
}

/// <summary>Parameters trained together at <paramref name="LearningRateScale"/> times the scheduled learning rate.</summary>
internal sealed record ParameterGroup(IReadOnlyList<Parameter> Parameters, double LearningRateScale = 1);
