using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Where a weight-only method merges LoRA adapters: on each layer's dense weight change ΔW = s·B·A, or on the adapters' own
/// parameters φ = (A, B), as the L-LoRA paper's task arithmetic does.
/// </summary>
public static class LoraMergeSpaces
{
    /// <summary>Task vector = the densified ΔW of each layer; the merge is exactly the methods' arithmetic on weights.</summary>
    public const string Delta = "delta";

    /// <summary>
    /// Task vector = φ_t − φ0 over the adapters' shared initialisation φ0 = (A0, B0); the merged adapter φ0 + merge(τ) is
    /// densified once. For LoRA its ΔW holds products of different tasks' factors; L-LoRA is linear in φ, so it has none.
    /// </summary>
    public const string Factors = "factors";

    /// <summary>The merge parameter that chooses the space, <c>adapter-space</c>.</summary>
    public const string ParameterName = "adapter-space";

    /// <summary>The parameter's declaration (default <see cref="Delta"/>).</summary>
    public static MergeParameterSpec Parameter { get; } = MergeParameterSpec.Choice(ParameterName, Delta,
        "LoRA adapter pools: merge each layer's dense ΔW (delta) or the adapters' factors A and B over their shared initialisation (factors, the L-LoRA paper's task arithmetic)",
        Delta, Factors);
}

/// <summary>
/// Merges LoRA adapters on their factors (arXiv 2310.04742's task arithmetic over PEFT parameters): every adapter must
/// come from the same initialisation φ0 (same rank, alpha, targets and <c>lora_seed</c>, so A0 is rebuilt from the seed
/// and B0 = 0), each adapter's task vector is (A_t − A0, B_t − B0), and any weight-only method merges those tensors.
/// </summary>
/// <remarks>
/// With task arithmetic the merged LoRA layer is s·(λΣΔB_t)·(A0 + λΣΔA_t): besides each task's own s·B_t·A_t (scaled), it
/// holds λ²·s·B_t·ΔA_u for every pair of tasks t ≠ u, the interference linearisation removes. An L-LoRA adapter's A never
/// leaves A0 (it gets no gradient when B0 = 0), so its merge is exactly λ·Σ ΔW_t, the same as in <see cref="LoraMergeSpaces.Delta"/> space.
/// </remarks>
public static class LoraFactorMerge
{
    /// <summary>
    /// The merged adapter: <paramref name="method"/> over the adapters' factor task vectors, applied to φ0. The caller owns it.
    /// </summary>
    /// <param name="method">A weight-only method that gives one model (not TALL masks or EMR, which give one per task).</param>
    /// <param name="adapterFolders">PEFT adapter folders from one initialisation.</param>
    /// <param name="config">The model the adapters are for.</param>
    /// <param name="expertWeights">Optional w_i scaling each task vector (default 1 each).</param>
    /// <exception cref="ArgumentException">Fewer than one adapter, adapters from different initialisations, or a method with per-task weights.</exception>
    public static LoraAdapter Merge(IMergeMethod method, IReadOnlyList<string> adapterFolders, VisionTransformerConfig config,
        IReadOnlyList<double>? expertWeights = null)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(adapterFolders);
        ArgumentNullException.ThrowIfNull(config);
        if (adapterFolders.Count == 0) throw new ArgumentException("Merging adapters on their factors needs at least one adapter.", nameof(adapterFolders));
        if (method.ProducesTaskSpecificWeights)
            throw new ArgumentException($"{method.Name} gives each task its own weights; adapters are merged on their factors only by methods that give one model " +
                $"({LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta} merges the dense ΔW with any method).", nameof(method));

        var options = SharedOptions(adapterFolders);
        var adapters = new List<LoraAdapter>();
        try
        {
            foreach (string folder in adapterFolders) adapters.Add(PeftAdapterFolder.Load(folder, config));
            using var initial = LoraAdapter.Initialize(config, options);
            CheckInitialization(initial, adapters, adapterFolders);

            using var scope = NewDisposeScope();
            var baseFactors = Factors(initial, useInitialization: true);
            var expertFactors = adapters.Select(a => (IReadOnlyDictionary<string, Tensor>)Factors(a, useInitialization: false)).ToList();
            var names = adapterFolders.Select(Path.GetFileName).Select(n => n ?? "").ToList();
            using var result = new InMemoryMergeDriver(new TensorFilter([], includeDefaultPatterns: false))
                .Merge(method, baseFactors, expertFactors, expertWeights, names);

            var merged = LoraAdapter.FromInitialization(options, initial.Modules.Select(m => (m.Target, m.A0, m.B0)));
            using (no_grad())
            {
                foreach (var m in merged.Modules)
                {
                    m.A.copy_(result.Merged[PeftAdapterFolder.NameOfA(m.Target.Prefix)]);
                    m.B.copy_(result.Merged[PeftAdapterFolder.NameOfB(m.Target.Prefix)]);
                }
            }
            return merged;
        }
        finally
        {
            foreach (var a in adapters) a.Dispose();
        }
    }

    /// <summary>The options every adapter shares; the error names the first folder that differs and how.</summary>
    private static LoraOptions SharedOptions(IReadOnlyList<string> folders)
    {
        var first = PeftAdapterFolder.ReadOptions(folders[0]);
        foreach (string folder in folders.Skip(1))
        {
            var other = PeftAdapterFolder.ReadOptions(folder);
            string? difference =
                other.Rank != first.Rank ? $"r = {other.Rank} against {first.Rank}" :
                other.Alpha != first.Alpha ? $"lora_alpha = {other.Alpha} against {first.Alpha}" :
                !other.Targets.SequenceEqual(first.Targets) ? $"target_modules [{string.Join(", ", other.Targets)}] against [{string.Join(", ", first.Targets)}]" :
                other.Seed != first.Seed ? $"lora_seed = {other.Seed} against {first.Seed}" :
                other.UseRsLora != first.UseRsLora ? $"use_rslora = {other.UseRsLora} against {first.UseRsLora}" :
                other.Linearized != first.Linearized ? $"linearized = {other.Linearized} against {first.Linearized}" :
                null;
            if (difference is not null)
                throw new ArgumentException($"Adapters are merged on their factors only when they share one initialisation φ0: {folder} has {difference} " +
                    $"in {folders[0]}. Merge them with {LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta}.");
        }
        return first;
    }

    /// <summary>
    /// φ0 is rebuilt from <c>lora_seed</c>; an adapter whose A never moves (L-LoRA with B0 = 0) must hold exactly that A0,
    /// which catches an adapter made elsewhere whose seed means another initialisation.
    /// </summary>
    private static void CheckInitialization(LoraAdapter initial, IReadOnlyList<LoraAdapter> adapters, IReadOnlyList<string> folders)
    {
        if (!initial.Options.Linearized) return;
        for (int i = 0; i < adapters.Count; i++)
        {
            foreach (var (start, stored) in initial.Modules.Zip(adapters[i].Modules))
            {
                if (!stored.A.detach().allclose(start.A0, rtol: 0, atol: 1e-6))
                    throw new ArgumentException($"{folders[i]}: {PeftAdapterFolder.NameOfA(start.Target.Prefix)} is not the initialisation lora_seed = " +
                        $"{initial.Options.Seed} gives, so the adapters' shared φ0 is unknown; merge them with {LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta}.");
            }
        }
    }

    /// <summary>The factors by their PEFT names: the trainable A and B, or the initialisation A0 and B0.</summary>
    private static Dictionary<string, Tensor> Factors(LoraAdapter adapter, bool useInitialization)
    {
        var factors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var m in adapter.Modules)
        {
            factors[PeftAdapterFolder.NameOfA(m.Target.Prefix)] = (useInitialization ? m.A0 : m.A).detach();
            factors[PeftAdapterFolder.NameOfB(m.Target.Prefix)] = (useInitialization ? m.B0 : m.B).detach();
        }
        return factors;
    }
}
