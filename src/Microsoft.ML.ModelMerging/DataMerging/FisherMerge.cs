using System.Globalization;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.DataMerging;

/// <summary>Settings of <see cref="FisherMerge"/>.</summary>
internal sealed record FisherMergeOptions
{
    /// <summary>Labeled training examples per task the Fisher is estimated on (the caller draws them, see <see cref="ExpertExamples.Sample"/>).</summary>
    public const int DefaultExamplesPerTask = 256;

    public const double DefaultEpsilon = 1e-6;

    /// <summary>ε added to every Fisher entry, so entries no example moved fall back to the plain average.</summary>
    public double Epsilon { get; init; } = DefaultEpsilon;

    public void Validate()
    {
        if (!(Epsilon > 0) || double.IsInfinity(Epsilon))
        {
            throw new ArgumentException($"Invalid Fisher merging options: Epsilon must be a positive finite number (got {Epsilon.ToString(CultureInfo.InvariantCulture)}).");
        }
    }
}

/// <summary>
/// Fisher merging (Matena &amp; Raffel, NeurIPS 2022) of Vision Transformer experts: every backbone tensor is the
/// average of the experts' tensors weighted entry by entry by their diagonal Fisher information,
/// <c>θ = Σ_i (F_i + ε)·θ_i / Σ_i (F_i + ε)</c>. F_i is the empirical Fisher of expert i on labeled examples of its
/// own task, the mean over examples n of the squared gradient (∂ log p(y_n | x_n; θ_i) / ∂θ_i)², with p the softmax of
/// the task's head on the expert's features. Heads are per task and not merged.
/// </summary>
/// <remarks>
/// The gradient of each example is taken on its own (one backward pass per example, with <c>autograd.grad</c>), so F is the per-example average
/// of the definition, not the square of batch-averaged gradients. FusionBench's implementation differs in two ways we
/// do not follow: it uses the model's own predictions instead of the labels (the "true" Fisher, per batch) and it
/// rescales each model's Fisher by its norm by default.
/// </remarks>
internal static class FisherMerge
{
    /// <summary>Merges the experts of <paramref name="tasks"/> (each with its head, images and labels); returns float32 tensors the caller owns.</summary>
    /// <param name="config">Architecture of every expert.</param>
    /// <param name="tasks">One expert per task with its labeled examples.</param>
    /// <param name="options">ε (default 1e-6).</param>
    /// <param name="progress">Reported after every example.</param>
    /// <param name="cancellationToken">Checked before every example.</param>
    public static Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<ExpertExamples> tasks, FisherMergeOptions? options = null,
        IProgress<DataMergeProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        options ??= new FisherMergeOptions();
        options.Validate();
        ExpertExamples.CheckAll(tasks, needLabels: true);
        var fishers = new List<Dictionary<string, Tensor>>();
        try
        {
            for (int t = 0; t < tasks.Count; t++)
            {
                var task = tasks[t];
                long total = task.Images.shape[0];
                int index = t;
                fishers.Add(DiagonalFisher(config, task.Expert, task.Head!, task.Images, task.Labels!,
                    done => progress?.Report(new DataMergeProgress(task.Name, index, tasks.Count, done, total)), cancellationToken));
            }

            return Merge(config, [.. tasks.Select(t => t.Expert)], [.. fishers], options.Epsilon);
        }
        finally
        {
            foreach (var tensor in fishers.SelectMany(f => f.Values))
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>
    /// The Fisher-weighted average <c>Σ_i (F_i + ε)·θ_i / Σ_i (F_i + ε)</c> of every tensor of the architecture, computed
    /// in float64; float32 tensors the caller owns.
    /// </summary>
    /// <exception cref="MergeInputException">A tensor is missing or a Fisher has another shape than its tensor.</exception>
    public static Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> fishers, double epsilon)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(fishers);
        if (experts.Count == 0 || experts.Count != fishers.Count)
        {
            throw new ArgumentException($"Need one Fisher per expert and at least one expert (got {experts.Count} experts, {fishers.Count} Fishers).");
        }

        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var expertWeights = experts.Select((e, i) => Checked(config, e, $"expert {i}")).ToList();
        var fisherWeights = fishers.Select((f, i) => Checked(config, f, $"the Fisher of expert {i}")).ToList();
        try
        {
            using var noGrad = no_grad();
            foreach (var (name, shape) in VisionTransformerNames.Shapes(config))
            {
                using var scope = NewDisposeScope();
                Tensor numerator = zeros(shape, ScalarType.Float64);
                Tensor denominator = zeros(shape, ScalarType.Float64);
                for (int i = 0; i < experts.Count; i++)
                {
                    Tensor theta = expertWeights[i].Get(name);
                    Tensor weight = fisherWeights[i].Get(name).to(ScalarType.Float64, theta.device).PlusScalar(epsilon);
                    numerator = numerator.to(theta.device).PlusInPlace(weight * theta.to(ScalarType.Float64));
                    denominator = denominator.to(theta.device).PlusInPlace(weight);
                }

                merged[name] = numerator.div_(denominator).to(ScalarType.Float32).MoveToOuterDisposeScope();
            }

            return merged;
        }
        catch
        {
            foreach (var tensor in merged.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// The diagonal empirical Fisher of one model on labeled examples: for every backbone tensor, the mean over the
    /// examples of the squared gradient of the example's log-likelihood log softmax(head(features))[label]. One forward
    /// and backward pass per example; float32 tensors the caller owns, on the weights' device.
    /// </summary>
    /// <param name="config">Architecture.</param>
    /// <param name="weights">The model's backbone tensors (not changed).</param>
    /// <param name="head">The task's head (frozen: it gets no gradient).</param>
    /// <param name="images">Pixels in [0,1], [N,C,H,W] or flattened.</param>
    /// <param name="labels">Class index per image, [N].</param>
    /// <param name="onExample">Called with the number of examples done after each one.</param>
    /// <param name="cancellationToken">Checked before every example.</param>
    public static Dictionary<string, Tensor> DiagonalFisher(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights,
        ClassificationHead head, Tensor images, Tensor labels, Action<long>? onExample = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(head);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        long count = images.shape[0];
        if (count == 0 || labels.dim() != 1 || labels.shape[0] != count)
        {
            throw new ArgumentException($"Need a non-empty batch of images and one label per image (got {count} images, labels {NamedTensorShape.Format(labels.shape)}).");
        }

        long[] targets = labels.cpu().to_type(ScalarType.Int64).data<long>().ToArray();
        var shapes = VisionTransformerNames.Shapes(config);
        var headState = head.Parameters.Select(p => (Parameter: p, RequiresGrad: p.requires_grad)).ToList();
        using var outer = NewDisposeScope();
        try
        {
            foreach (var (parameter, _) in headState)
            {
                parameter.requires_grad = false;
            }

            var leaves = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var model = Checked(config, weights, "the model");
            foreach (var (name, shape) in shapes)
            {
                Tensor value = model.Get(name);
                leaves[name] = value.detach().to(ScalarType.Float32).clone().requires_grad_(true);
                sums[name] = zeros(shape, ScalarType.Float64, device: value.device);
            }

            List<Tensor> inputs = [.. leaves.Values];
            List<Tensor> accumulators = [.. leaves.Keys.Select(name => sums[name])];
            for (long n = 0; n < count; n++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var step = NewDisposeScope();
                Tensor logits = head.Forward(VisionTransformer.Forward(config, leaves, images.narrow(0, n, 1)));
                if (targets[n] < 0 || targets[n] >= logits.shape[1])
                {
                    throw new ArgumentException($"Label {targets[n]} of example {n} is outside the head's {logits.shape[1]} classes.", nameof(labels));
                }

                // autograd.grad returns this example's gradients alone. Accumulating in .grad and zeroing between examples
                // is not reliable here: the class embedding's gradient (through view + expand) kept earlier examples' part.
                Tensor logLikelihood = log_softmax(logits, 1)[0, targets[n]];
                IList<Tensor> gradients = autograd.grad([logLikelihood], inputs, allow_unused: true);
                using (no_grad())
                {
                    for (int i = 0; i < inputs.Count; i++)
                    {
                        if (gradients[i] is Tensor gradient && gradient.Handle != IntPtr.Zero)
                        {
                            accumulators[i].PlusInPlace(gradient.to(ScalarType.Float64).Squared());
                        }
                    }
                }

                onExample?.Invoke(n + 1);
            }

            return sums.ToDictionary(kv => kv.Key, kv => kv.Value.DividedBy(count).to(ScalarType.Float32).MoveToOuterDisposeScope(), StringComparer.Ordinal);
        }
        finally
        {
            foreach (var (parameter, requiresGrad) in headState)
            {
                parameter.requires_grad = requiresGrad;
            }
        }
    }

    /// <summary><paramref name="tensors"/> read through the config's shapes; a missing or misshapen one is a merge input error.</summary>
    internal static ConfigWeights Checked(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> tensors, string owner) =>
        new(config, tensors, owner, (message, name) => new MergeInputException(message, name));
}
