using Microsoft.ML.ModelMerging.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.LowRank;

/// <summary>
/// The adapter of one linear layer: the trainable factors A [r,in] and B [out,r], and the initialisation φ0 = (A0, B0)
/// the linearised form expands around (frozen copies).
/// </summary>
public sealed class LoraModule : IDisposable
{
    internal LoraModule(LoraTarget target, Tensor a0, Tensor b0)
    {
        Target = target;
        A0 = a0.detach().clone().DetachFromDisposeScope();
        B0 = b0.detach().clone().DetachFromDisposeScope();
        A = new Parameter(a0.detach().clone(), requires_grad: true);
        A.DetachFromDisposeScope();
        B = new Parameter(b0.detach().clone(), requires_grad: true);
        B.DetachFromDisposeScope();
        using var zero = B0.count_nonzero();
        B0IsZero = zero.item<long>() == 0;
    }

    /// <summary>The layer adapted: its name prefix and sizes.</summary>
    public LoraTarget Target { get; }
    /// <summary>The trainable down-projection A [r, in].</summary>
    public Parameter A { get; }
    /// <summary>The trainable up-projection B [out, r].</summary>
    public Parameter B { get; }
    /// <summary>A's initialisation, a frozen copy.</summary>
    public Tensor A0 { get; }
    /// <summary>B's initialisation, a frozen copy (zero with PEFT's initialisation).</summary>
    public Tensor B0 { get; }

    /// <summary>
    /// True when B0 = 0 (PEFT's initialisation): the linearised module is then s·B·A0·x, A receives no gradient and is
    /// not trained, and the stored A equals A0.
    /// </summary>
    public bool B0IsZero { get; }

    /// <summary>Disposes the factors and their initial copies.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        A0.Dispose();
        B0.Dispose();
    }
}

/// <summary>
/// LoRA adapters on a Vision Transformer's block linear layers, as PEFT makes them: ΔW = s·B·A with s = alpha/r, A
/// Kaiming-uniform (PEFT's <c>kaiming_uniform_(a=√5)</c>, i.e. U(−1/√in, 1/√in)) from a seed, B zero. They run through
/// <see cref="ForwardHooks.LinearAdapter"/>, so the backbone's weights are never copied.
/// </summary>
/// <remarks>
/// <para>L-LoRA (<see cref="LoraOptions.Linearized"/>): each module f(x; A, B) = s·B·A·x is replaced by its first-order
/// Taylor expansion around φ0 = (A0, B0), f_lin(x; φ) = f(x; φ0) + J_φ f(x; φ0)·(φ − φ0). The module is bilinear in (A, B),
/// so its JVP has the closed form s·[(B − B0)·A0 + B0·(A − A0)]·x and
/// f_lin(x; φ) = s·[B·A0 + B0·(A − A0)]·x.</para>
/// <para>With PEFT's B0 = 0 this is s·B·A0·x: A gets no gradient, only B trains, the adapter keeps A = A0, and its
/// dense ΔW = s·B·A is the same formula as LoRA's. A linearised adapter so stored is therefore also an ordinary PEFT LoRA
/// adapter computing the same function.</para>
/// </remarks>
public sealed class LoraAdapter : IDisposable
{
    private readonly Dictionary<string, LoraModule> _modules;

    private LoraAdapter(LoraOptions options, IEnumerable<LoraModule> modules)
    {
        Options = options;
        Modules = modules.ToList();
        _modules = Modules.ToDictionary(m => m.Target.Prefix, StringComparer.Ordinal);
    }

    /// <summary>Rank, alpha, targets, seed and mode of the adapter.</summary>
    public LoraOptions Options { get; }

    /// <summary>The adapted layers, in model order.</summary>
    public IReadOnlyList<LoraModule> Modules { get; }

    /// <summary>The factor s of ΔW = s·B·A (alpha/r, or alpha/√r with rsLoRA) of a module without a rank or alpha pattern.</summary>
    public double Scale => Options.Scale;

    /// <summary>
    /// The adapters of every target layer of <paramref name="config"/>, at PEFT's initialisation: A Kaiming-uniform from a
    /// generator seeded by (<see cref="LoraOptions.Seed"/>, layer prefix), so a module's A0 does not depend on which other
    /// layers are targeted, and B = 0.
    /// </summary>
    public static LoraAdapter Initialize(VisionTransformerConfig config, LoraOptions options, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var modules = new List<LoraModule>();
        try
        {
            foreach (var target in options.TargetsOf(config))
            {
                using var scope = NewDisposeScope();
                var generator = new Generator(ModuleSeed(options.Seed, target.Prefix));
                double bound = 1.0 / Math.Sqrt(target.InFeatures);
                int rank = options.RankOf(target.Prefix);
                var a0 = rand(new long[] { rank, target.InFeatures }, dtype: ScalarType.Float64, generator: generator).Times(2 * bound).MinusScalar(bound).to_type(dtype);
                var b0 = zeros(new long[] { target.OutFeatures, rank }, dtype: dtype);
                modules.Add(new LoraModule(target, a0, b0));
            }
        }
        catch
        {
            foreach (var m in modules) m.Dispose();
            throw;
        }
        return new LoraAdapter(options, modules);
    }

    /// <summary>
    /// An adapter with an explicit initialisation φ0 per layer (A and B start at A0 and B0): for adapters read from a file
    /// and for checking the linearisation when B0 ≠ 0.
    /// </summary>
    public static LoraAdapter FromInitialization(LoraOptions options, IEnumerable<(LoraTarget Target, Tensor A0, Tensor B0)> modules)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var built = new List<LoraModule>();
        try
        {
            foreach (var (target, a0, b0) in modules)
            {
                int rank = options.RankOf(target.Prefix);
                if (!a0.shape.SequenceEqual([rank, target.InFeatures]) || !b0.shape.SequenceEqual([target.OutFeatures, rank]))
                    throw new ArgumentException($"{target.Prefix}: A0 [{string.Join(", ", a0.shape)}] and B0 [{string.Join(", ", b0.shape)}] do not fit r = {rank}, " +
                        $"expected [{rank}, {target.InFeatures}] and [{target.OutFeatures}, {rank}].");
                built.Add(new LoraModule(target, a0, b0));
            }
        }
        catch
        {
            foreach (var m in built) m.Dispose();
            throw;
        }
        return new LoraAdapter(options, built);
    }

    /// <summary>The module of a layer prefix, or null when that layer is not adapted.</summary>
    public LoraModule? Module(string prefix) => _modules.GetValueOrDefault(prefix);

    /// <summary>The hooks that add every module's output to its layer's output.</summary>
    internal ForwardHooks Hooks => new() { LinearAdapter = Apply };

    /// <summary>
    /// The parameters fine-tuning updates: A and B of each module for LoRA; for L-LoRA the linearised module's
    /// parameters that receive a gradient (B, and A only when B0 ≠ 0).
    /// </summary>
    public IReadOnlyList<Parameter> Trainable =>
        [.. Modules.SelectMany(m => Options.Linearized && m.B0IsZero ? new[] { m.B } : new[] { m.A, m.B })];

    /// <summary>How many numbers fine-tuning updates (<see cref="Trainable"/>).</summary>
    public long TrainableParameterCount => Trainable.Sum(p => p.numel());

    /// <summary>The layer's output plus the module's: s·(x·Aᵀ)·Bᵀ (LoRA) or s·[(x·A0ᵀ)·Bᵀ + (x·(A − A0)ᵀ)·B0ᵀ] (L-LoRA).</summary>
    public Tensor Apply(string prefix, Tensor input, Tensor output)
    {
        if (!_modules.TryGetValue(prefix, out var m)) return output;
        return output.Plus(Output(m, input));
    }

    private Tensor Output(LoraModule m, Tensor x)
    {
        if (!Options.Linearized)
        {
            return nn.functional.linear(nn.functional.linear(x, m.A), m.B).Times(Options.ScaleOf(m.Target.Prefix));
        }

        // f(φ0) + J(φ − φ0) = s·B0·A0·x + s·(B − B0)·A0·x + s·B0·(A − A0)·x = s·B·A0·x + s·B0·(A − A0)·x.
        Tensor result = nn.functional.linear(nn.functional.linear(x, m.A0), m.B);
        if (!m.B0IsZero)
        {
            result = result.Plus(nn.functional.linear(nn.functional.linear(x, m.A - m.A0), m.B0));
        }
        return result.Times(Options.ScaleOf(m.Target.Prefix));
    }

    /// <summary>The dense weight change of a layer [out, in]: s·B·A (LoRA) or s·[B·A0 + B0·(A − A0)] (L-LoRA), float32.</summary>
    public Tensor Delta(string prefix)
    {
        var m = _modules.GetValueOrDefault(prefix) ?? throw new ArgumentException($"The adapter has no module for '{prefix}'.");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Tensor a = m.A.to_type(ScalarType.Float64), b = m.B.to_type(ScalarType.Float64);
        Tensor delta = b.matmul(a);
        if (Options.Linearized)
        {
            delta = b.matmul(m.A0.to_type(ScalarType.Float64));
            if (!m.B0IsZero) delta = delta.Plus(m.B0.to_type(ScalarType.Float64).matmul(a - m.A0.to_type(ScalarType.Float64)));
        }
        return delta.Times(Options.ScaleOf(prefix)).to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The dense model the adapter stands for: a copy of <paramref name="pretrained"/> with W0 + ΔW for every adapted
    /// layer's weight. The caller owns the returned tensors.
    /// </summary>
    public Dictionary<string, Tensor> Densify(IReadOnlyDictionary<string, Tensor> pretrained)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var m in Modules)
            {
                string name = VisionTransformerNames.Weight(m.Target.Prefix);
                if (!pretrained.TryGetValue(name, out var w0))
                    throw new ArgumentException($"The pre-trained model has no tensor '{name}' for the adapter's module.");
                if (!w0.shape.SequenceEqual([m.Target.OutFeatures, m.Target.InFeatures]))
                    throw new ArgumentException($"The adapter's module for '{name}' is for a [{m.Target.OutFeatures}, {m.Target.InFeatures}] weight; the pre-trained one is [{string.Join(", ", w0.shape)}].");
            }
            using var noGrad = no_grad();
            foreach (var (name, w0) in pretrained)
            {
                string prefix = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : "";
                if (_modules.ContainsKey(prefix))
                {
                    using var delta = Delta(prefix);
                    using var w = w0.to_type(ScalarType.Float32);
                    result[name] = w.Plus(delta).to_type(w0.dtype).DetachFromDisposeScope();
                }
                else
                {
                    result[name] = w0.detach().clone().DetachFromDisposeScope();
                }
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>A seed per (adapter seed, layer): FNV-1a over the prefix, mixed with the seed.</summary>
    internal static ulong ModuleSeed(int seed, string prefix)
    {
        ulong hash = 14695981039346656037UL;
        foreach (char c in prefix)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        hash ^= unchecked((ulong)seed) * 0x9E3779B97F4A7C15UL;
        hash ^= hash >> 33;
        hash *= 0xFF51AFD7ED558CCDUL;
        hash ^= hash >> 33;
        return hash & 0x7FFFFFFFFFFFFFFFUL;
    }

    /// <summary>Disposes every module's tensors.</summary>
    public void Dispose()
    {
        foreach (var m in Modules) m.Dispose();
    }
}
