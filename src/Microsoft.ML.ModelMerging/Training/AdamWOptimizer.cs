using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) over groups of parameters, each group at its own learning rate, with PyTorch's update
/// (<see cref="AdamUpdate"/>) and PyTorch's bookkeeping: each parameter counts its own steps, and one without a gradient is
/// skipped. It replaces TorchSharp's <c>optim.AdamW</c>, whose step converts its numbers to temporary scalars that a
/// collection on another thread can free while libtorch reads them.
/// </summary>
internal sealed class AdamWOptimizer : IDisposable
{
    private readonly List<Group> _groups;

    public AdamWOptimizer(IEnumerable<(IReadOnlyList<Parameter> Parameters, double LearningRate)> groups, double weightDecay,
        double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8)
    {
        WeightDecay = weightDecay;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        _groups = groups.Select(g => new Group(g.LearningRate, g.Parameters.Select(p =>
        {
            using var scope = NewDisposeScope();
            return new State(p, zeros_like(p).detach().DetachFromDisposeScope(), zeros_like(p).detach().DetachFromDisposeScope());
        }).ToList())).ToList();
    }

    public double WeightDecay { get; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }

    /// <summary>The learning rate of each group, in the order given; set them before a step to follow a schedule.</summary>
    public IReadOnlyList<Group> Groups => _groups;

    /// <summary>Sets every gradient to zero.</summary>
    public void ZeroGrad()
    {
        using var scope = NewDisposeScope();
        foreach (var state in _groups.SelectMany(g => g.States)) state.Parameter.grad?.zero_();
    }

    /// <summary>One AdamW update of every parameter that holds a gradient.</summary>
    public void Step()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var group in _groups)
        {
            foreach (var state in group.States)
            {
                Tensor? grad = state.Parameter.grad;
                if (grad is null) continue;
                state.Steps++;
                AdamUpdate.Apply(state.Parameter, grad, state.ExpAvg, state.ExpAvgSq, state.Steps, group.LearningRate, Beta1, Beta2, Epsilon, WeightDecay);
            }
        }
    }

    public void Dispose()
    {
        foreach (var state in _groups.SelectMany(g => g.States))
        {
            state.ExpAvg.Dispose();
            state.ExpAvgSq.Dispose();
        }
    }

    /// <summary>A group's parameters and their moments; its learning rate can change between steps.</summary>
    internal sealed class Group(double learningRate, IReadOnlyList<State> states)
    {
        public double LearningRate { get; set; } = learningRate;
        public IReadOnlyList<State> States { get; } = states;
    }

    internal sealed class State(Parameter parameter, Tensor expAvg, Tensor expAvgSq)
    {
        public Parameter Parameter { get; } = parameter;
        public Tensor ExpAvg { get; } = expAvg;
        public Tensor ExpAvgSq { get; } = expAvgSq;
        public long Steps { get; set; }
    }
}
