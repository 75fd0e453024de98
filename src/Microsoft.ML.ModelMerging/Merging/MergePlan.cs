using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Which tensors a merge merges and which it copies from the base, decided and checked from signatures alone, so
/// any driver (in memory, or streaming from checkpoint headers) rejects models that do not fit together before
/// reading a single weight.
/// </summary>
internal sealed class MergePlan
{
    private MergePlan(IReadOnlyList<string> mergedTensorNames, IReadOnlyList<string> copiedTensorNames, int expertCount)
    {
        MergedTensorNames = mergedTensorNames;
        CopiedTensorNames = copiedTensorNames;
        ExpertCount = expertCount;
    }

    /// <summary>Tensors merged by the method, sorted by ordinal name (the order drivers process them in).</summary>
    public IReadOnlyList<string> MergedTensorNames { get; }

    /// <summary>Tensors copied from the base untouched, sorted.</summary>
    public IReadOnlyList<string> CopiedTensorNames { get; }

    public int ExpertCount { get; }

    /// <summary>
    /// Splits the base's tensors by <paramref name="filter"/> and checks the experts: every merged tensor present,
    /// same shape, floating dtype (any floating dtype: the math runs in float32); no tensor the base lacks unless
    /// excluded by name (e.g. an expert's own head); one finite weight per expert when weights are given.
    /// </summary>
    /// <param name="baseModel">θ0's tensors by name.</param>
    /// <param name="experts">Each expert's tensors by name.</param>
    /// <param name="filter">Which tensors are merged (default <see cref="TensorFilter.Default"/>).</param>
    /// <param name="expertWeights">Optional w_i per expert.</param>
    /// <param name="expertNames">Names (or file paths) used in messages, one per expert.</param>
    /// <param name="allowMissing">Let an expert lack merged tensors (its task vector is zero there, and those entries count in
    /// no statistic of that task) and hold tensors the base lacks (ignored), instead of rejecting it. Tensors no expert
    /// holds are copied from the base.</param>
    /// <exception cref="MergeInputException">A tensor does not fit; the message names it and the expert.</exception>
    /// <exception cref="ArgumentException">Wrong number of experts, weights or names, or a non-finite weight.</exception>
    public static MergePlan Create(
        IReadOnlyDictionary<string, TensorSignature> baseModel,
        IReadOnlyList<IReadOnlyDictionary<string, TensorSignature>> experts,
        TensorFilter? filter = null,
        IReadOnlyList<double>? expertWeights = null,
        IReadOnlyList<string>? expertNames = null,
        bool allowMissing = false)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(experts);
        filter ??= TensorFilter.Default;
        CheckExpertArguments(experts.Count, expertWeights, expertNames);

        var names = baseModel.Keys.Order(StringComparer.Ordinal).ToArray();
        // With allowMissing, a tensor no expert holds (e.g. the text tower of a CLIPModel base merged with CLIPVisionModel
        // experts) is copied from the base: merging it would give θ0 anyway, and it must not weigh in any statistic.
        var merged = names.Where(name => filter.ShouldMerge(name, baseModel[name].DType)
            && (!allowMissing || experts.Any(expert => expert.ContainsKey(name)))).ToArray();
        var copied = names.Except(merged, StringComparer.Ordinal).ToArray();
        for (int i = 0; i < experts.Count; i++)
        {
            CheckExpert(i, baseModel, experts[i], merged, filter, expertNames, allowMissing);
        }

        return new MergePlan(merged, copied, experts.Count);
    }

    /// <summary>The same checks for models held as tensors.</summary>
    public static MergePlan Create(
        IReadOnlyDictionary<string, Tensor> baseModel,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        TensorFilter? filter = null,
        IReadOnlyList<double>? expertWeights = null,
        IReadOnlyList<string>? expertNames = null)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(experts);
        return Create(Signatures(baseModel), [.. experts.Select(Signatures)], filter, expertWeights, expertNames);
    }

    private static Dictionary<string, TensorSignature> Signatures(IReadOnlyDictionary<string, Tensor> model) =>
        model.ToDictionary(pair => pair.Key, pair => TensorSignature.Of(pair.Value), StringComparer.Ordinal);

    private static void CheckExpertArguments(int expertCount, IReadOnlyList<double>? expertWeights, IReadOnlyList<string>? expertNames)
    {
        if (expertCount == 0)
        {
            throw new ArgumentException("At least one expert is needed.", "experts");
        }

        if (expertNames is not null && expertNames.Count != expertCount)
        {
            throw new ArgumentException($"{expertNames.Count} expert name(s) given for {expertCount} expert(s).", nameof(expertNames));
        }

        if (expertWeights is null)
        {
            return;
        }

        if (expertWeights.Count != expertCount)
        {
            throw new ArgumentException($"{expertWeights.Count} expert weight(s) given for {expertCount} expert(s).", nameof(expertWeights));
        }

        for (int i = 0; i < expertCount; i++)
        {
            if (!double.IsFinite(expertWeights[i]))
            {
                throw new ArgumentException(
                    $"The weight of {MergeInputException.DescribeExpert(i, expertNames)} is {expertWeights[i]}; weights must be finite.", nameof(expertWeights));
            }
        }
    }

    private static void CheckExpert(
        int index,
        IReadOnlyDictionary<string, TensorSignature> baseModel,
        IReadOnlyDictionary<string, TensorSignature> expert,
        IEnumerable<string> mergedNames,
        TensorFilter filter,
        IReadOnlyList<string>? expertNames,
        bool allowMissing)
    {
        string who = MergeInputException.DescribeExpert(index, expertNames);
        foreach (string name in mergedNames)
        {
            var expected = baseModel[name];
            string expectedShape = MergeInputException.FormatShape([.. expected.Shape]);
            if (!expert.TryGetValue(name, out var actual))
            {
                if (allowMissing)
                {
                    continue;
                }

                throw new MergeInputException($"Tensor '{name}' (shape {expectedShape}) is missing from {who}.", name, index);
            }

            if (!actual.Shape.SequenceEqual(expected.Shape))
            {
                throw new MergeInputException(
                    $"Tensor '{name}': {who} has shape {MergeInputException.FormatShape([.. actual.Shape])}, expected the base model's {expectedShape}.",
                    name,
                    index);
            }

            if (!ScalarTypes.IsFloatingPoint(actual.DType))
            {
                throw new MergeInputException($"Tensor '{name}': {who} has dtype {actual.DType} but the base model's is {expected.DType}.", name, index);
            }
        }

        if (allowMissing)
        {
            return;
        }

        foreach (string name in expert.Keys.Order(StringComparer.Ordinal))
        {
            if (!baseModel.ContainsKey(name) && !filter.IsExcludedByName(name))
            {
                throw new MergeInputException(
                    $"Tensor '{name}' of {who} is not in the base model (exclude it by name if it is task-specific).", name, index);
            }
        }
    }
}
