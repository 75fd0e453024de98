using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.Training;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// Adam (Kingma &amp; Ba) with PyTorch's update, m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g²,
/// p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε), written out so its whole state (moments and step) can be checkpointed
/// by name and restored bit for bit. The step counter is shared by all parameters; a parameter without a gradient
/// in a step is left untouched (its moments do not decay).
/// </summary>
internal sealed class AdamOptimizer : IDisposable
{
    public const string ExpAvgPrefix = "optimizer.exp_avg.";
    public const string ExpAvgSqPrefix = "optimizer.exp_avg_sq.";

    private readonly List<Entry> _entries;
    private readonly double _beta1;
    private readonly double _beta2;
    private readonly double _epsilon;

    public AdamOptimizer(IReadOnlyDictionary<string, Parameter> parameters, double beta1, double beta2, double epsilon)
    {
        _beta1 = beta1;
        _beta2 = beta2;
        _epsilon = epsilon;
        _entries = parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv =>
        {
            using var scope = NewDisposeScope();
            Tensor m = zeros_like(kv.Value).detach().DetachFromDisposeScope();
            Tensor v = zeros_like(kv.Value).detach().DetachFromDisposeScope();
            return new Entry(kv.Key, kv.Value, m, v);
        }).ToList();
    }

    /// <summary>Updates done so far (t of the bias corrections of the last update).</summary>
    public int Step { get; private set; }

    /// <summary>Sets every gradient to zero (gradients then accumulate over the tasks' backward passes).</summary>
    public void ZeroGrad()
    {
        using var scope = NewDisposeScope();
        foreach (var entry in _entries)
        {
            entry.Parameter.grad?.zero_();
        }
    }

    /// <summary>True when at least one parameter holds a gradient.</summary>
    public bool AnyGradient()
    {
        using var scope = NewDisposeScope();
        return _entries.Any(e => e.Parameter.grad is not null);
    }

    /// <summary>One Adam update of every parameter with a gradient, at learning rate <paramref name="learningRate"/>.</summary>
    public void Update(double learningRate)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Step++;
        foreach (var entry in _entries)
        {
            Tensor? grad = entry.Parameter.grad;
            if (grad is null)
            {
                continue;
            }

            AdamUpdate.Apply(entry.Parameter, grad, entry.ExpAvg, entry.ExpAvgSq, Step, learningRate, _beta1, _beta2, _epsilon);
        }
    }

    /// <summary>The moments by checkpoint name (<see cref="ExpAvgPrefix"/>/<see cref="ExpAvgSqPrefix"/> + parameter name); live tensors.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> StateTensors() => _entries.SelectMany(e => new[]
    {
        KeyValuePair.Create(ExpAvgPrefix + e.Name, e.ExpAvg),
        KeyValuePair.Create(ExpAvgSqPrefix + e.Name, e.ExpAvgSq),
    });

    /// <summary>Restores the step and moments; <paramref name="read"/> returns the saved tensor of a checkpoint name.</summary>
    public void LoadState(int step, Func<string, Tensor> read)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (name, tensor) in StateTensors())
        {
            tensor.copy_(read(name));
        }

        Step = step;
    }

    public void Dispose()
    {
        foreach (var entry in _entries)
        {
            entry.ExpAvg.Dispose();
            entry.ExpAvgSq.Dispose();
        }
    }

    private sealed record Entry(string Name, Parameter Parameter, Tensor ExpAvg, Tensor ExpAvgSq);
}
