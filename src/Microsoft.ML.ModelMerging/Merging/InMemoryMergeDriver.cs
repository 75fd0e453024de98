using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Runs any <see cref="IMergeMethod"/> over models held in memory as name → tensor dictionaries: checks that the
/// models fit together before any work (<see cref="MergePlan"/>), runs the statistics passes, then merges tensor
/// by tensor.
/// </summary>
public sealed class InMemoryMergeDriver
{
    /// <summary>A driver that merges the tensors <paramref name="filter"/> selects (default: <see cref="TensorFilter.Default"/>).</summary>
    public InMemoryMergeDriver(TensorFilter? filter = null)
    {
        Filter = filter ?? TensorFilter.Default;
    }

    /// <summary>Which tensors are merged; the others are copied from the base.</summary>
    public TensorFilter Filter { get; }

    /// <summary>
    /// Merges <paramref name="experts"/> into <paramref name="baseModel"/> with <paramref name="method"/>.
    /// </summary>
    /// <param name="method">A method from <see cref="MergeMethodRegistry"/> or constructed directly.</param>
    /// <param name="baseModel">θ0, name → tensor. Excluded tensors (see <see cref="Filter"/>) are copied from it.</param>
    /// <param name="experts">θ_i per expert. Each must hold every merged tensor of the base with the same shape;
    /// tensors the base lacks are allowed only when excluded by name (e.g. each expert's own head).</param>
    /// <param name="expertWeights">Optional w_i scaling each task vector τ_i (default 1 each).</param>
    /// <param name="expertNames">Optional names for error messages.</param>
    /// <exception cref="MergeInputException">Missing or extra tensor, shape or dtype mismatch, NaN/Inf; the message names the tensor and expert.</exception>
    public MergeResult Merge(
        IMergeMethod method,
        IReadOnlyDictionary<string, Tensor> baseModel,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        IReadOnlyList<double>? expertWeights = null,
        IReadOnlyList<string>? expertNames = null)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(experts);
        var plan = MergePlan.Create(baseModel, experts, Filter, expertWeights, expertNames);
        var mergedNames = plan.MergedTensorNames;
        var copiedNames = plan.CopiedTensorNames;

        method.Begin(experts.Count);
        for (int pass = 0; pass < method.StatisticsPassCount; pass++)
        {
            foreach (string name in method.NeedsPass(pass) ? mergedNames : [])
            {
                using var scope = NewDisposeScope();
                using var input = BuildInput(name, baseModel, experts, expertWeights, expertNames);
                method.AccumulateStatistics(pass, input);
            }

            method.FinishPass(pass);
        }

        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var taskSpecific = new Dictionary<string, TaskSpecificTensor>(StringComparer.Ordinal);
        try
        {
            foreach (string name in mergedNames)
            {
                using var scope = NewDisposeScope();
                using var input = BuildInput(name, baseModel, experts, expertWeights, expertNames);
                var result = method.MergeTensor(input);
                var baseTensor = baseModel[name];
                merged[name] = result.Merged.to_type(baseTensor.dtype, copy: true).DetachFromDisposeScope();
                result.Merged.Dispose();
                NonFiniteOutput.Check(merged[name], Checkpoints.SafeTensorsDTypes.FromScalarType(baseTensor.dtype), name);
                if (result.TaskSpecific is { } parts)
                {
                    parts.DetachFromDisposeScope();
                    taskSpecific[name] = parts;
                }
            }

            foreach (string name in copiedNames)
            {
                merged[name] = baseModel[name].clone().DetachFromDisposeScope();
            }
        }
        catch
        {
            foreach (var tensor in merged.Values)
            {
                tensor.Dispose();
            }

            foreach (var parts in taskSpecific.Values)
            {
                parts.Dispose();
            }

            throw;
        }

        return new MergeResult(merged, taskSpecific, mergedNames, copiedNames, experts.Count, method.ProducesTaskSpecificWeights, baseModel);
    }

    private static MergeTensorInput BuildInput(
        string name,
        IReadOnlyDictionary<string, Tensor> baseModel,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts,
        IReadOnlyList<double>? expertWeights,
        IReadOnlyList<string>? expertNames) =>
        MergeTensorInput.FromExperts(name, baseModel[name], [.. experts.Select(expert => expert[name])], expertWeights, expertNames);
}
