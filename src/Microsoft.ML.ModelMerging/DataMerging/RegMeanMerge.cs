using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.DataMerging;

/// <summary>Settings of <see cref="RegMeanMerge"/>.</summary>
internal sealed record RegMeanMergeOptions
{
    /// <summary>Examples per task whose layer inputs make the Gram matrices (the caller draws them, see <see cref="ExpertExamples.Sample"/>).</summary>
    public const int DefaultExamplesPerTask = 256;

    public const double DefaultAlpha = 0.95;

    /// <summary>α: the off-diagonal entries of every Gram matrix are multiplied by α (diagonal unchanged); 1 = plain RegMean, 0 = diagonal only.</summary>
    public double Alpha { get; init; } = DefaultAlpha;

    /// <summary>Images per forward pass while the Gram matrices are collected (no effect on the result beyond rounding).</summary>
    public int BatchSize { get; init; } = 64;

    public void Validate()
    {
        var errors = new List<string>();
        if (!(Alpha >= 0 && Alpha <= 1))
        {
            errors.Add($"Alpha must be in [0, 1] (got {Alpha.ToString(CultureInfo.InvariantCulture)})");
        }

        if (BatchSize <= 0)
        {
            errors.Add($"BatchSize must be positive (got {BatchSize})");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid RegMean options: " + string.Join("; ", errors) + ".");
        }
    }
}

/// <summary>
/// RegMean (Jin et al., ICLR 2023) for Vision Transformer experts: the weight of every linear layer of the blocks (q, k,
/// v, out, fc1, fc2) is the closed-form minimiser of Σ_i ‖X_i·Wᵀ − X_i·W_iᵀ‖², i.e.
/// <c>Wᵀ = (Σ_i G̃_i)⁻¹ Σ_i G̃_i·W_iᵀ</c> with G_i = X_iᵀX_i the Gram matrix of that layer's inputs when expert i runs on
/// examples of its own task, and G̃ = α·G + (1 − α)·diag(G) (off-diagonals scaled by α). Every other tensor (biases,
/// LayerNorms, embeddings, projection) is the plain average. Heads are per task and not merged.
/// </summary>
/// <remarks>
/// Each Gram matrix is averaged over the input rows (tokens × examples) and accumulated in float64; the solve is in
/// float64. The inputs are captured from the functional forward through <see cref="ForwardHooks.LinearAdapter"/>.
/// </remarks>
internal static class RegMeanMerge
{
    /// <summary>Merges the experts of <paramref name="tasks"/> (labels and heads are not needed); float32 tensors the caller owns.</summary>
    public static Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<ExpertExamples> tasks, RegMeanMergeOptions? options = null,
        IProgress<DataMergeProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        options ??= new RegMeanMergeOptions();
        options.Validate();
        ExpertExamples.CheckAll(tasks, needLabels: false);
        var grams = new List<Dictionary<string, Tensor>>();
        try
        {
            for (int t = 0; t < tasks.Count; t++)
            {
                var task = tasks[t];
                long total = task.Images.shape[0];
                int index = t;
                grams.Add(GramMatrices(config, task.Expert, task.Images, options.BatchSize,
                    done => progress?.Report(new DataMergeProgress(task.Name, index, tasks.Count, done, total)), cancellationToken));
            }

            return Merge(config, [.. tasks.Select(t => t.Expert)], [.. grams], options.Alpha);
        }
        finally
        {
            foreach (var tensor in grams.SelectMany(g => g.Values))
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>The prefixes of the linear layers RegMean merges (every block's q, k, v, out, fc1, fc2), in forward order.</summary>
    public static IReadOnlyList<string> LinearLayers(VisionTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return [.. Enumerable.Range(0, config.Layers).SelectMany(block => VisionTransformerNames.Layer(block).Linears)];
    }

    /// <summary>
    /// Gram matrices XᵀX / rows of the inputs of every linear layer of the blocks (by layer prefix, e.g.
    /// <c>vision_model.encoder.layers.0.mlp.fc1</c>), with X all input rows (tokens of all images); float64 tensors the
    /// caller owns.
    /// </summary>
    /// <param name="config">Architecture.</param>
    /// <param name="weights">The model's backbone tensors.</param>
    /// <param name="images">Pixels in [0,1], [N,C,H,W] or flattened.</param>
    /// <param name="batchSize">Images per forward pass.</param>
    /// <param name="onImages">Called with the number of images done after each batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    public static Dictionary<string, Tensor> GramMatrices(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images,
        int batchSize = 64, Action<long>? onImages = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var rows = new Dictionary<string, long>(StringComparer.Ordinal);
        var hooks = new ForwardHooks
        {
            LinearAdapter = (prefix, input, output) =>
            {
                Tensor x = input.detach().reshape(-1, input.shape[^1]).to(ScalarType.Float64);
                Tensor gram = x.t().matmul(x);
                if (sums.TryGetValue(prefix, out Tensor? sum))
                {
                    sum.PlusInPlace(gram);
                    rows[prefix] += x.shape[0];
                }
                else
                {
                    sums[prefix] = gram.DetachFromDisposeScope();
                    rows[prefix] = x.shape[0];
                }

                return output;
            },
        };

        try
        {
            using var noGrad = no_grad();
            long count = images.shape[0];
            for (long start = 0; start < count; start += batchSize)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                long size = Math.Min(batchSize, count - start);
                VisionTransformer.Forward(config, weights, images.narrow(0, start, size), hooks);
                onImages?.Invoke(start + size);
            }

            foreach (var (prefix, sum) in sums)
            {
                ScalarOperands.With(rows[prefix], count => sum.div_(count));
            }

            return sums;
        }
        catch
        {
            foreach (var tensor in sums.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// The RegMean merge from given Gram matrices (one dictionary per expert, by layer prefix, as
    /// <see cref="GramMatrices"/> returns them): <c>Wᵀ = (Σ_i G̃_i)⁻¹ Σ_i G̃_i·W_iᵀ</c> for each linear layer's weight,
    /// the mean for every other tensor; float32 tensors the caller owns.
    /// </summary>
    /// <exception cref="Merging.MergeInputException">A tensor is missing or misshapen.</exception>
    /// <exception cref="InvalidOperationException">A summed Gram matrix is singular (an input feature is zero on every example of every task).</exception>
    public static Dictionary<string, Tensor> Merge(VisionTransformerConfig config, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> grams, double alpha)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(grams);
        if (experts.Count == 0 || experts.Count != grams.Count)
        {
            throw new ArgumentException($"Need one set of Gram matrices per expert and at least one expert (got {experts.Count} experts, {grams.Count} sets).");
        }

        var linearWeights = LinearLayers(config).ToDictionary(VisionTransformerNames.Weight, prefix => prefix, StringComparer.Ordinal);
        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var expertWeights = experts.Select((e, i) => FisherMerge.Checked(config, e, $"expert {i}")).ToList();
        try
        {
            using var noGrad = no_grad();
            foreach (var (name, _) in VisionTransformerNames.Shapes(config))
            {
                using var scope = NewDisposeScope();
                var thetas = expertWeights.Select(e => e.Get(name).to(ScalarType.Float64)).ToList();
                Tensor result = linearWeights.TryGetValue(name, out string? prefix)
                    ? SolveLayer(prefix, thetas, grams, alpha)
                    : stack(thetas, 0).mean([0]);
                merged[name] = result.to(ScalarType.Float32).MoveToOuterDisposeScope();
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

    /// <summary>Σ G̃_i and Σ G̃_i·W_iᵀ, then the solve; W_i are [out,in] float64.</summary>
    private static Tensor SolveLayer(string prefix, IReadOnlyList<Tensor> weights, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> grams, double alpha)
    {
        long inputs = weights[0].shape[1];
        Tensor? left = null, right = null;
        for (int i = 0; i < weights.Count; i++)
        {
            if (!grams[i].TryGetValue(prefix, out Tensor? gram) || gram is null)
            {
                throw new Merging.MergeInputException($"The Gram matrices of expert {i} lack layer '{prefix}'.", prefix, i);
            }

            if (!gram.shape.SequenceEqual([inputs, inputs]))
            {
                throw new Merging.MergeInputException(
                    $"The Gram matrix of expert {i} for '{prefix}' has shape {NamedTensorShape.Format(gram.shape)}; expected [{inputs}, {inputs}].", prefix, i);
            }

            Tensor g = ReduceOffDiagonal(gram.to(ScalarType.Float64, weights[i].device), alpha);
            left = left is null ? g : left.Plus(g);
            Tensor product = g.matmul(weights[i].t());
            right = right is null ? product : right.Plus(product);
        }

        try
        {
            return linalg.solve(left!, right!).t();
        }
        catch (Exception e) when (e is ExternalException or InvalidOperationException)
        {
            throw new InvalidOperationException($"RegMean: the summed Gram matrix of '{prefix}' is singular ({e.Message.Split('\n')[0]}).", e);
        }
    }

    /// <summary>G̃ = α·G + (1 − α)·diag(G): off-diagonal entries scaled by α, the diagonal unchanged.</summary>
    public static Tensor ReduceOffDiagonal(Tensor gram, double alpha)
    {
        ArgumentNullException.ThrowIfNull(gram);
        return gram.Times(alpha).PlusInPlace(diag(gram.diagonal()).TimesInPlace(1 - alpha));
    }
}
