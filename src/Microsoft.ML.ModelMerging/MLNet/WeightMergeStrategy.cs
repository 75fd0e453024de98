using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// A weight-only merge method of a <see cref="MergeMethodRegistry"/> (task arithmetic, TIES, DARE, ...) run in memory over
/// the expert set (<see cref="InMemoryMergeDriver"/>). Methods whose weights depend on the task (TALL masks, consensus,
/// EMR) give one model per task: the task's own materialised weights θ0 + s_t·(M_t ⊙ τ).
/// </summary>
public sealed class WeightMergeStrategy : IMergeStrategy
{
    private readonly MergeMethodRegistry _registry;
    private readonly MergeParameters _parameters;

    /// <param name="method">Registry name, e.g. <c>ties</c>.</param>
    /// <param name="parameters">Its parameters; absent ones take their defaults. Checked here, so a typo fails early.</param>
    /// <param name="registry">Where to find the method; <see cref="MergeMethodRegistry.Default"/> when null.</param>
    public WeightMergeStrategy(string method, MergeParameters? parameters = null, MergeMethodRegistry? registry = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        _registry = registry ?? MergeMethodRegistry.Default;
        _parameters = parameters ?? MergeParameters.Empty;
        MergeMethodDescriptor descriptor = _registry.Get(method);
        _parameters.Resolve(descriptor);
        Name = descriptor.Name;
        Settings = new SortedDictionary<string, string>(
            _parameters.Values.ToDictionary(p => p.Key.ToLowerInvariant(), p => p.Value), StringComparer.Ordinal);
    }

    /// <summary>Task arithmetic, θ0 + λ·Σ τ_i.</summary>
    public static WeightMergeStrategy TaskArithmetic(double lambda = 0.3) =>
        new("task-arithmetic", MergeParameters.Parse(FormattableString.Invariant($"lambda={lambda:R}")));

    /// <summary><paramref name="method"/> with <c>name=value</c> parameters, e.g. <c>Create("ties", "keep=0.2", "lambda=0.4")</c>.</summary>
    public static WeightMergeStrategy Create(string method, params string[] parameters) =>
        new(method, MergeParameters.Parse(parameters));

    public string Name { get; }

    /// <summary>The parameters given (defaults are not listed).</summary>
    public IReadOnlyDictionary<string, string> Settings { get; }

    public bool RequiresUnlabeledImages => false;

    public MergedModel Merge(MergeStrategyContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var experts = context.Experts;
        IMergeMethod method = _registry.Create(Name, _parameters);
        context.Cancellation.ThrowIfCancellationRequested();
        MergeResult result = new InMemoryMergeDriver().Merge(method, experts.Pretrained, experts.Experts, expertNames: experts.TaskNames);
        var owned = new List<IDisposable> { result };
        try
        {
            var parts = new List<MergedModelPart>();
            if (!result.HasTaskSpecificWeights)
            {
                var heads = context.Tasks.Select(t => new OnnxTaskHead(t, experts.Head(t))).ToArray();
                parts.Add(new MergedModelPart(new DenseVitOnnxExporter(experts.Config, result.Merged, heads, context.ExportOptions)));
            }
            else
            {
                foreach (string task in context.Tasks)
                {
                    context.Cancellation.ThrowIfCancellationRequested();
                    int index = experts.TaskNames.ToList().IndexOf(task);
                    Dictionary<string, Tensor> weights = result.MaterializeTask(index);
                    owned.Add(new OwnedTensors(weights.Values));
                    parts.Add(new MergedModelPart(new DenseVitOnnxExporter(experts.Config, weights, [new OnnxTaskHead(task, experts.Head(task))], context.ExportOptions)));
                }
            }

            return new MergedModel(parts, owned);
        }
        catch
        {
            foreach (IDisposable disposable in owned)
            {
                disposable.Dispose();
            }

            throw;
        }
    }

    public override string ToString() =>
        Settings.Count == 0 ? Name : Name + " " + string.Join(" ", Settings.Select(s => $"{s.Key}={s.Value}"));
}
