using System.Globalization;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// The safetensors file of an adaptation run: the adapted parameters under their own names, Adam's moments under
/// <c>optimizer.exp_avg.</c>/<c>optimizer.exp_avg_sq.</c> + name, and in the metadata the completed step count, the
/// settings that shape the trajectory (learning rate, schedule, steps, batch size, seed, Adam constants, tasks and their
/// image counts) and the model's own metadata. Restoring checks all of them, so a resumed run is the uninterrupted one.
/// </summary>
internal static class AdaptationCheckpoint
{
    public const string StepMetadataKey = "mlmerge.tta.step";
    public const string RunMetadataKey = "mlmerge.tta.run";
    public const string LossMetadataKey = "mlmerge.tta.loss";

    /// <summary>Writes the checkpoint atomically (temporary file, then rename over any older one).</summary>
    internal static void Save(string path, IAdaptableModel model, AdamOptimizer optimizer, int completedSteps, double loss,
        TestTimeAdaptationOptions options, IReadOnlyList<AdaptationTask> tasks)
    {
        var metadata = new Dictionary<string, string>(model.Metadata, StringComparer.Ordinal)
        {
            [StepMetadataKey] = completedSteps.ToString(CultureInfo.InvariantCulture),
            [RunMetadataKey] = RunDescription(options, tasks),
            [LossMetadataKey] = loss.ToString("R", CultureInfo.InvariantCulture),
        };
        using var scope = NewDisposeScope();
        var tensors = model.AdaptedParameters.Select(kv => KeyValuePair.Create(kv.Key, (Tensor)kv.Value))
            .Concat(optimizer.StateTensors())
            .ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu(), StringComparer.Ordinal);
        SafeTensorsWriter.Save(path, tensors, metadata);
    }

    /// <summary>Loads parameters and optimizer state for a resumed run; returns the completed step count.</summary>
    internal static int Restore(string path, IAdaptableModel model, AdamOptimizer optimizer, TestTimeAdaptationOptions options,
        IReadOnlyList<AdaptationTask> tasks)
    {
        using var checkpoint = Checkpoint.Open(path);
        string expectedRun = RunDescription(options, tasks);
        string savedRun = Require(checkpoint, RunMetadataKey);
        if (savedRun != expectedRun)
        {
            throw new InvalidDataException(
                $"{checkpoint.Source}: the checkpoint belongs to another run; saved settings {savedRun}, this run {expectedRun}.");
        }

        int step = ReadStep(checkpoint);
        if (step > options.Steps)
        {
            throw new InvalidDataException($"{checkpoint.Source}: the checkpoint is at step {step}, beyond the run's {options.Steps} steps.");
        }

        using var scope = NewDisposeScope();
        var parameters = ReadParameters(checkpoint, model);
        var optimizerState = optimizer.StateTensors().ToDictionary(kv => kv.Key, kv => ReadMatching(checkpoint, kv.Key, kv.Value), StringComparer.Ordinal);
        CopyInto(model, parameters);
        optimizer.LoadState(step, name => optimizerState[name]);
        return step;
    }

    /// <summary>
    /// Copies the adapted parameters of a checkpoint into <paramref name="model"/> (e.g. to use the result of a finished
    /// run without running it again). The model must have been built the same way (same metadata).
    /// </summary>
    /// <returns>The checkpoint's completed step count.</returns>
    public static int LoadParameters(string path, IAdaptableModel model)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(model);
        using var checkpoint = Checkpoint.Open(path);
        using var scope = NewDisposeScope();
        CopyInto(model, ReadParameters(checkpoint, model));
        return ReadStep(checkpoint);
    }

    /// <summary>The completed step count recorded in a checkpoint, without loading its tensors.</summary>
    public static int ReadCompletedSteps(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var checkpoint = Checkpoint.Open(path);
        return ReadStep(checkpoint);
    }

    private static int ReadStep(Checkpoint checkpoint) =>
        int.TryParse(Require(checkpoint, StepMetadataKey), NumberStyles.None, CultureInfo.InvariantCulture, out int step)
            ? step
            : throw new InvalidDataException($"{checkpoint.Source}: metadata '{StepMetadataKey}' is not a step count.");

    private static Dictionary<string, Tensor> ReadParameters(Checkpoint checkpoint, IAdaptableModel model)
    {
        foreach (var (key, value) in model.Metadata)
        {
            if (!checkpoint.Metadata.TryGetValue(key, out string? saved) || saved != value)
            {
                throw new InvalidDataException(
                    $"{checkpoint.Source}: the checkpoint was written for a differently built model ('{key}' is {saved ?? "absent"}, this model has {value}).");
            }
        }

        return model.AdaptedParameters.ToDictionary(kv => kv.Key, kv => ReadMatching(checkpoint, kv.Key, kv.Value), StringComparer.Ordinal);
    }

    private static void CopyInto(IAdaptableModel model, Dictionary<string, Tensor> values)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in model.AdaptedParameters)
        {
            parameter.copy_(values[name]);
        }
    }

    private static Tensor ReadMatching(Checkpoint checkpoint, string name, Tensor like)
    {
        if (!checkpoint.Contains(name))
        {
            throw new InvalidDataException($"{checkpoint.Source}: tensor '{name}' is missing.");
        }

        Tensor value = checkpoint.ReadTensor(name);
        if (!value.shape.SequenceEqual(like.shape))
        {
            throw new InvalidDataException(
                $"{checkpoint.Source}: '{name}' has shape {NamedTensorShape.Format(value.shape)}, expected {NamedTensorShape.Format(like.shape)}.");
        }

        return value;
    }

    private static string Require(Checkpoint checkpoint, string key) =>
        checkpoint.Metadata.TryGetValue(key, out string? value)
            ? value
            : throw new InvalidDataException($"{checkpoint.Source}: metadata '{key}' is missing; not an adaptation checkpoint.");

    /// <summary>The settings that decide the trajectory, as canonical JSON.</summary>
    private static string RunDescription(TestTimeAdaptationOptions options, IReadOnlyList<AdaptationTask> tasks)
    {
        var description = new Dictionary<string, object>
        {
            ["learning_rate"] = options.LearningRate,
            ["schedule"] = options.Schedule.ToString(),
            ["steps"] = options.Steps,
            ["batch_size_per_task"] = options.BatchSizePerTask,
            ["seed"] = options.Seed,
            ["beta1"] = options.Beta1,
            ["beta2"] = options.Beta2,
            ["epsilon"] = options.Epsilon,
            ["tasks"] = tasks.Select(t => new Dictionary<string, object> { ["name"] = t.Name, ["images"] = t.Images.shape[0] }).ToArray(),
        };

        // Recorded only when used, so checkpoints of entropy-only runs stay resumable.
        if (options.TaskRoutingWeight > 0)
        {
            description["task_routing_weight"] = options.TaskRoutingWeight;
        }

        if (options.DiversityWeight > 0)
        {
            description["diversity_weight"] = options.DiversityWeight;
        }

        return JsonSerializer.Serialize(description);
    }
}
