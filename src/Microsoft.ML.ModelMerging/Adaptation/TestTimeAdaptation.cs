using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// Test-time adaptation by entropy minimisation, shared by WEMoE (routers) and AdaMerging (coefficients): at every step
/// a batch of unlabeled images is drawn from every task, and Adam updates the model's adapted parameters to lower
/// Σ_tasks mean_batch H(softmax(head_t(features))). Heads and every other tensor stay frozen.
/// </summary>
internal static class TestTimeAdaptation
{
    /// <summary>
    /// Mean over the batch of the entropy −Σ_c p_c·log p_c of softmax(<paramref name="logits"/>) [B,C], a scalar;
    /// computed from log-softmax, so it is exact where FusionBench adds 1e-8 inside the log.
    /// </summary>
    public static Tensor MeanEntropy(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        Tensor logProbabilities = log_softmax(logits, 1);
        return -(logProbabilities.exp() * logProbabilities).sum(dim: 1).mean();
    }

    /// <summary>
    /// Entropy −Σ_c p̄_c·log p̄_c of the batch's mean prediction p̄ = mean_b softmax(<paramref name="logits"/>) [B,C], a
    /// scalar: log C when the batch's answers spread evenly over the classes, 0 when every image gets the same one.
    /// </summary>
    public static Tensor MarginalEntropy(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        Tensor mean = softmax(logits, 1).mean([0]);
        return -(mean * mean.AtLeast(1e-12).log()).sum();
    }

    /// <summary>
    /// Runs (or resumes, with <see cref="TestTimeAdaptationOptions.ResumeFrom"/>) an adaptation of
    /// <paramref name="model"/>'s adapted parameters in place.
    /// </summary>
    /// <param name="model">The model; only <see cref="IAdaptableModel.AdaptedParameters"/> change.</param>
    /// <param name="tasks">Unlabeled images and frozen head per task, at least one, with distinct names.</param>
    /// <param name="options">See <see cref="TestTimeAdaptationOptions.ForWeightEnsembling"/> and
    /// <see cref="TestTimeAdaptationOptions.ForAdaMerging"/>.</param>
    /// <param name="progress">Called synchronously after every step.</param>
    /// <param name="cancellationToken">Checked before every step. A cancelled run throws
    /// <see cref="OperationCanceledException"/>; the checkpoint file then holds the last complete checkpoint.</param>
    public static AdaptationResult Run(
        IAdaptableModel model,
        IReadOnlyList<AdaptationTask> tasks,
        TestTimeAdaptationOptions options,
        IProgress<AdaptationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        CheckTasks(tasks);
        CheckTaskRouting(model, tasks, options);
        var adapted = model.AdaptedParameters;
        if (adapted.Count == 0)
        {
            throw new ArgumentException("The model has no adapted parameters.", nameof(model));
        }

        using var optimizer = new AdamOptimizer(adapted, options.Beta1, options.Beta2, options.Epsilon);
        int start = options.ResumeFrom is null ? 0 : AdaptationCheckpoint.Restore(options.ResumeFrom, model, optimizer, options, tasks);
        var samplers = tasks.Select((t, i) => new TaskBatchSampler(t.Images.shape[0], options.BatchSizePerTask, options.Seed, i)).ToArray();
        var losses = new List<double>();
        var sinceCheckpoint = System.Diagnostics.Stopwatch.StartNew();

        // Heads are frozen for the run; the adapted parameters must track gradients. Both are restored afterwards.
        var requiresGrad = tasks.SelectMany(t => t.Head.Parameters).Concat(adapted.Values)
            .Distinct().Select(p => (Parameter: p, Value: p.requires_grad)).ToList();
        try
        {
            foreach (Parameter parameter in tasks.SelectMany(t => t.Head.Parameters))
            {
                parameter.requires_grad = false;
            }

            foreach (Parameter parameter in adapted.Values)
            {
                parameter.requires_grad = true;
            }

            for (int step = start; step < options.Steps; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                double learningRate = options.LearningRateAt(step);
                double[] entropies = Step(model, tasks, samplers, optimizer, step, learningRate, options.TaskRoutingWeight, options.DiversityWeight);
                double loss = entropies.Sum();
                if (!double.IsFinite(loss))
                {
                    // Every later step would be NaN too, and a checkpoint of it would resume into the same state.
                    throw new InvalidOperationException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                        $"Adaptation diverged: the loss is {loss} at step {step + 1} of {options.Steps} (learning rate {learningRate:G4}). Nothing of this step was kept; lower the learning rate (mlmerge adapt: --lr, into a new output directory)."));
                }

                losses.Add(loss);

                int completed = step + 1;
                bool checkpoint = options.CheckpointPath is not null
                    && (completed == options.Steps
                        || (options.CheckpointEvery > 0 && completed % options.CheckpointEvery == 0)
                        || (options.CheckpointInterval is { } interval && sinceCheckpoint.Elapsed >= interval));
                if (checkpoint)
                {
                    AdaptationCheckpoint.Save(options.CheckpointPath!, model, optimizer, completed, loss, options, tasks);
                    sinceCheckpoint.Restart();
                }

                progress?.Report(new AdaptationProgress(completed, options.Steps, loss, entropies, learningRate, checkpoint));
            }
        }
        finally
        {
            foreach (var (parameter, value) in requiresGrad)
            {
                parameter.requires_grad = value;
            }
        }

        return new AdaptationResult(start, options.Steps, losses);
    }

    /// <summary>
    /// One optimisation step. Each task's loss is back-propagated on its own (its graph freed before the next
    /// task's forward); the gradients add up to the gradient of the summed loss. The loss is the task's mean entropy,
    /// plus <paramref name="routingWeight"/> × the mean −log of the weight its own expert gets, minus
    /// <paramref name="diversityWeight"/> × the entropy of the batch's mean prediction; the entropies are returned.
    /// </summary>
    private static double[] Step(IAdaptableModel model, IReadOnlyList<AdaptationTask> tasks, TaskBatchSampler[] samplers,
        AdamOptimizer optimizer, int step, double learningRate, double routingWeight, double diversityWeight)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        var entropies = new double[tasks.Count];
        for (int t = 0; t < tasks.Count; t++)
        {
            using var taskScope = NewDisposeScope();
            Tensor images = tasks[t].Images;
            Tensor batch = images.index_select(0, tensor(samplers[t].Indices(step), device: images.device));
            Tensor logits;
            Tensor? own = null;
            if (routingWeight > 0)
            {
                var (features, routing) = ((IRoutedModel)model).ForwardWithRouting(batch);
                logits = tasks[t].Head.Forward(features);
                own = routing.select(2, tasks[t].Expert!.Value);                    // [Blocks, B]
            }
            else
            {
                logits = tasks[t].Head.Forward(model.Forward(batch));
            }

            Tensor entropy = MeanEntropy(logits);
            Tensor loss = entropy;
            if (routingWeight > 0)
            {
                loss = loss - own!.AtLeast(1e-12).log().mean().Times(routingWeight);
            }

            if (diversityWeight > 0)
            {
                loss = loss - MarginalEntropy(logits).Times(diversityWeight);
            }

            if (!loss.requires_grad)
            {
                throw new InvalidOperationException("The model's features do not depend on its adapted parameters (no gradient can flow).");
            }

            loss.backward();
            entropies[t] = entropy.item<float>();
        }

        if (!optimizer.AnyGradient())
        {
            throw new InvalidOperationException("No adapted parameter received a gradient.");
        }

        optimizer.Update(learningRate);
        return entropies;
    }

    /// <summary>The routing term needs routing weights that are a distribution, and each task's own expert.</summary>
    private static void CheckTaskRouting(IAdaptableModel model, IReadOnlyList<AdaptationTask> tasks, TestTimeAdaptationOptions options)
    {
        if (options.TaskRoutingWeight == 0)
        {
            return;
        }

        if (model is not IRoutedModel { RoutesByDistribution: true } routed)
        {
            throw new ArgumentException(
                $"TaskRoutingWeight {options.TaskRoutingWeight.ToString(System.Globalization.CultureInfo.InvariantCulture)} needs a model whose routing weights are a distribution over the experts (WEMoE with routing=softmax).",
                nameof(options));
        }

        foreach (var task in tasks)
        {
            if (task.Expert is not int expert || expert < 0 || expert >= routed.ExpertCount)
            {
                throw new ArgumentException(
                    $"Task '{task.Name}' names no expert of the model's {routed.ExpertCount} (got {task.Expert?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}); the routing term needs each task's own expert.",
                    nameof(tasks));
            }
        }
    }

    private static void CheckTasks(IReadOnlyList<AdaptationTask> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        if (tasks.Count == 0)
        {
            throw new ArgumentException("At least one task is needed.", nameof(tasks));
        }

        foreach (var task in tasks)
        {
            if (task is null || task.Images is null || task.Head is null || task.Name is null)
            {
                throw new ArgumentException("Every task needs a name, images and a head.", nameof(tasks));
            }

            if (task.Images.dim() < 2 || task.Images.shape[0] == 0)
            {
                throw new ArgumentException($"Task '{task.Name}' has images of shape {Models.NamedTensorShape.Format(task.Images.shape)}; expected a non-empty batch [N, ...].", nameof(tasks));
            }
        }

        var duplicate = tasks.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Task name '{duplicate.Key}' is used twice.", nameof(tasks));
        }
    }
}
