using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>
/// A weight-only merge method of <see cref="MergeMethodRegistry"/> (task arithmetic, TIES, DARE, ...) run in memory over the
/// pool (<see cref="InMemoryMergeDriver"/>; <c>mlmerge merge</c> streams the same method from disk). Methods whose weights
/// depend on the task (TALL masks, EMR) give one model per task: the task's own materialised weights.
/// </summary>
public sealed class WeightOnlyAlgorithm : IMergeAlgorithm
{
    private readonly MergeMethodDescriptor _method;

    /// <summary>Wraps a weight-only method as an algorithm; its needs follow from the method (base used, task-specific weights).</summary>
    /// <param name="method">The registry entry of the method.</param>
    /// <param name="searchGrid">Values a comparison tries, by parameter name.</param>
    public WeightOnlyAlgorithm(MergeMethodDescriptor method, Dictionary<string, IReadOnlyList<string>>? searchGrid = null)
    {
        ArgumentNullException.ThrowIfNull(method);
        _method = method;
        bool perTask = method.Create().ProducesTaskSpecificWeights;
        Needs = (method.UsesBase ? AlgorithmNeeds.PretrainedBase : AlgorithmNeeds.None) | (perTask ? AlgorithmNeeds.TaskAtInference : AlgorithmNeeds.None);
        // A method that gives one model can also merge LoRA adapters on their factors; one with per-task weights cannot.
        Parameters = perTask ? method.Parameters : [.. method.Parameters, LoraMergeSpaces.Parameter];
        SearchGrid = searchGrid ?? [];
        foreach (var (name, values) in SearchGrid)
        {
            // A typo in a grid fails at registration, not in the middle of a comparison.
            foreach (string value in values) new MergeParameters([new(name, value)]).Resolve(Name, Parameters);
        }
    }

    /// <inheritdoc/>
    public string Name => _method.Name;

    /// <inheritdoc/>
    public string Summary => _method.Summary;

    /// <inheritdoc/>
    public AlgorithmNeeds Needs { get; }

    /// <summary>The method's parameters, plus <c>adapter-space</c> when it gives one model (see <see cref="LoraMergeSpaces"/>).</summary>
    public IReadOnlyList<MergeParameterSpec> Parameters { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; }

    /// <summary>The merge method's registry entry (what <c>mlmerge merge</c> streams).</summary>
    public MergeMethodDescriptor Method => _method;

    /// <summary>
    /// The method over every expert of <paramref name="pool"/> in memory. A method that does not use the base merges a pool
    /// without one: the first expert stands in (θ0 + mean(θ_i − θ0) is the mean of the experts).
    /// </summary>
    public MergeResult Merge(IMergeMethod method, ExpertPool pool)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(pool);
        if (_method.UsesBase && !pool.HasPretrained)
        {
            throw new ArgumentException($"{Name} forms task vectors against a pre-trained base, and the pool at {pool.Directory} has none.");
        }

        var experts = pool.Experts;
        return new InMemoryMergeDriver().Merge(method, pool.HasPretrained ? pool.Pretrained : experts[0], experts, expertNames: pool.TaskNames);
    }

    /// <summary>
    /// The method over the factors of a pool of LoRA adapters (<see cref="LoraFactorMerge"/>), densified against the pool's
    /// pre-trained base. The caller owns the returned tensors.
    /// </summary>
    /// <exception cref="ArgumentException">An expert of the pool is not a LoRA adapter, or the adapters do not share an initialisation.</exception>
    public Dictionary<string, Tensor> MergeAdapterFactors(IMergeMethod method, ExpertPool pool)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(pool);
        CheckAdapterPool(pool);
        var folders = pool.TaskNames.Select(t => Path.Combine(pool.Directory, pool.Manifest.Task(t).Expert)).ToList();
        using var adapter = LoraFactorMerge.Merge(method, folders, pool.Config, expertNames: pool.TaskNames);
        return adapter.Densify(pool.Pretrained);
    }

    /// <summary>Merging on the factors needs a pool of adapters only, and a base to apply the merged adapter to.</summary>
    private static void CheckAdapterPool(ExpertPool pool)
    {
        string? dense = pool.TaskNames.FirstOrDefault(t => !pool.IsAdapterExpert(t));
        if (dense is not null)
            throw new ArgumentException($"{LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Factors} merges LoRA adapters on their factors, and the expert of " +
                $"'{dense}' in the pool at {pool.Directory} is a full checkpoint ({pool.Manifest.Task(dense).Expert}).");
        if (!pool.HasPretrained)
            throw new ArgumentException($"The pool at {pool.Directory} has no pre-trained base to apply the merged adapter to.");
    }

    /// <summary>The parameters, and with <c>adapter-space=factors</c> a pool of adapters with a base (before any work).</summary>
    public void Check(ExpertPool pool, MergeParameters parameters)
    {
        IMergeAlgorithm.CheckDeclared(this, pool, parameters);
        if (Parameters.Contains(LoraMergeSpaces.Parameter) && LoraMergeSpaces.Split(parameters, Name).Space == LoraMergeSpaces.Factors)
            CheckAdapterPool(pool);
    }

    /// <inheritdoc/>
    public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(context);
        parameters.Resolve(Name, Parameters);
        var (space, methodParameters, _) = LoraMergeSpaces.Split(parameters, Name);
        bool factors = space == LoraMergeSpaces.Factors;
        IMergeMethod method = _method.Create(methodParameters);
        context.Cancellation.ThrowIfCancellationRequested();
        context.Progress?.Report(new AlgorithmProgress("merging", 0, 1));
        // One model (merged, owned by `result`), or per-task weights materialised below from `perTask`.
        MergeResult? perTask = null;
        IReadOnlyDictionary<string, Tensor>? merged;
        IDisposable result;
        if (factors)
        {
            var dense = MergeAdapterFactors(method, pool);
            merged = dense;
            result = new OwnedTensors(dense.Values);
        }
        else
        {
            var weights = Merge(method, pool);
            if (weights.HasTaskSpecificWeights) perTask = weights;
            merged = weights.HasTaskSpecificWeights ? null : weights.Merged;
            result = weights;
        }
        var owned = new List<IDisposable> { result };
        try
        {
            var tasks = context.Tasks ?? pool.TaskNames;
            var parts = new List<MultiTaskModelPart>();
            if (merged is not null)
            {
                var heads = tasks.Select(t => new OnnxTaskHead(t, pool.Head(t))).ToArray();
                parts.Add(new MultiTaskModelPart(new DenseVitOnnxExporter(pool.Config, merged, heads, context.ExportOptions)));
            }
            else
            {
                foreach (string task in tasks)
                {
                    context.Cancellation.ThrowIfCancellationRequested();
                    Dictionary<string, Tensor> weights = perTask!.MaterializeTask(pool.TaskNames.ToList().IndexOf(task));
                    owned.Add(new OwnedTensors(weights.Values));
                    parts.Add(new MultiTaskModelPart(new DenseVitOnnxExporter(pool.Config, weights, [new OnnxTaskHead(task, pool.Head(task))], context.ExportOptions)));
                }
            }

            context.Progress?.Report(new AlgorithmProgress("merging", 1, 1));
            return new MultiTaskModel(parts, owned);
        }
        catch
        {
            foreach (IDisposable disposable in owned) disposable.Dispose();
            throw;
        }
    }
}
