using Microsoft.ML.ModelMerging.Checkpoints;
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
    /// densified once. The model then depends on products of merged factors (see <see cref="LoraFactorMerge"/>).
    /// </summary>
    public const string Factors = "factors";

    /// <summary>The merge parameter that chooses the space, <c>adapter-space</c>.</summary>
    public const string ParameterName = "adapter-space";

    /// <summary>The parameter's declaration (default <see cref="Delta"/>).</summary>
    public static MergeParameterSpec Parameter { get; } = MergeParameterSpec.Choice(ParameterName, Delta,
        "LoRA adapter pools: merge each layer's dense ΔW (delta) or the adapters' factors A and B over their shared initialisation (factors, the L-LoRA paper's task arithmetic)",
        Delta, Factors);

    /// <summary>
    /// The space <paramref name="parameters"/> ask for (names matched as everywhere: any case, '-' or '_'), the other
    /// parameters (the method's own), and whether the space was given at all.
    /// </summary>
    /// <exception cref="ArgumentException">The value is neither <see cref="Delta"/> nor <see cref="Factors"/>.</exception>
    public static (string Space, MergeParameters MethodParameters, bool Given) Split(MergeParameters parameters, string methodName)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var given = parameters.Values.Where(p => MergeParameters.SameName(ParameterName, p.Key)).Select(p => p.Value).LastOrDefault();
        var rest = new MergeParameters(parameters.Values.Where(p => !MergeParameters.SameName(ParameterName, p.Key)));
        return (given is null ? Delta : (string)Parameter.Parse(methodName, given), rest, given is not null);
    }
}

/// <summary>
/// Merges LoRA adapters on their factors (arXiv 2310.04742's task arithmetic over PEFT parameters): every adapter must
/// come from the same initialisation φ0 (same rank, alpha, targets and a recorded <c>lora_seed</c>, so A0 is rebuilt from
/// the seed and B0 = 0), each adapter's task vector is (A_t − A0, B_t − B0), and any weight-only method that gives one
/// model merges those tensors.
/// </summary>
/// <remarks>
/// With task arithmetic and B0 = 0, writing ΔA_t = A_t − A0, the merged layer is s·(λΣB_t)·(A0 + λΣΔA_u)
/// = λ·s·Σ B_t·A0 + λ²·s·Σ_t Σ_u B_t·ΔA_u. The dense merge is λ·s·Σ B_t·A0 + λ·s·Σ B_t·ΔA_t. So on the factors each task's
/// own B_t·ΔA_t is weighted λ² instead of λ, and products of different tasks' factors B_t·ΔA_u (t ≠ u) appear. An L-LoRA
/// adapter's A never leaves A0 (it gets no gradient when B0 = 0), so for it both terms vanish and task arithmetic (or simple
/// averaging) on the factors is exactly the dense one; methods that trim or drop entries (TIES, DARE) still differ.
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
    /// <param name="expertNames">Names for error messages (default: the folders' names).</param>
    /// <exception cref="ArgumentException">No adapter, adapters from different or unknown initialisations, or a method with per-task weights.</exception>
    public static LoraAdapter Merge(IMergeMethod method, IReadOnlyList<string> adapterFolders, VisionTransformerConfig config,
        IReadOnlyList<double>? expertWeights = null, IReadOnlyList<string>? expertNames = null)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(adapterFolders);
        ArgumentNullException.ThrowIfNull(config);
        if (adapterFolders.Count == 0) throw new ArgumentException("No adapter to merge.", nameof(adapterFolders));
        if (method.ProducesTaskSpecificWeights)
            throw new ArgumentException($"{method.Name} gives each task its own weights; adapters are merged on their factors only by methods that give one model " +
                $"({LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta} merges the dense ΔW with any method).", nameof(method));

        var folders = adapterFolders.Select(f => Path.TrimEndingDirectorySeparator(f)).ToList();
        var names = expertNames ?? folders.Select(Path.GetFileName).Select(n => n ?? "").ToList();
        var options = SharedOptions(folders, config);
        var adapters = new List<LoraAdapter>();
        try
        {
            foreach (string folder in folders) adapters.Add(PeftAdapterFolder.Load(folder, config));
            using var initial = LoraAdapter.Initialize(config, options);
            CheckInitialization(initial, adapters, folders);

            using var scope = NewDisposeScope();
            var baseFactors = Factors(initial, useInitialization: true);
            var expertFactors = adapters.Select(a => (IReadOnlyDictionary<string, Tensor>)Factors(a, useInitialization: false)).ToList();
            using var result = new InMemoryMergeDriver(new TensorFilter([], includeDefaultPatterns: false))
                .Merge(method, baseFactors, expertFactors, expertWeights, names);

            var merged = LoraAdapter.FromInitialization(options, initial.Modules.Select(m => (m.Target, m.A0, m.B0)));
            try
            {
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
            catch
            {
                merged.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var a in adapters) a.Dispose();
        }
    }

    /// <summary>
    /// The options every adapter shares, each with a recorded seed; the error names the folders that differ and how.
    /// </summary>
    private static LoraOptions SharedOptions(IReadOnlyList<string> folders, VisionTransformerConfig config)
    {
        foreach (string folder in folders)
        {
            if (!PeftAdapterFolder.RecordsSeed(folder, config))
                throw new ArgumentException($"{folder}: {PeftAdapterFolder.ConfigFileName} records no lora_seed, so the initialisation A0 its task vector is " +
                    $"measured from is unknown (an adapter trained elsewhere); merge it with {LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta}.");
        }

        var first = PeftAdapterFolder.ReadOptions(folders[0], config);
        foreach (string folder in folders.Skip(1))
        {
            var other = PeftAdapterFolder.ReadOptions(folder, config);
            string? difference =
                other.Rank != first.Rank ? $"r = {other.Rank}, {folders[0]} has r = {first.Rank}" :
                other.Alpha != first.Alpha ? $"lora_alpha = {other.Alpha}, {folders[0]} has {first.Alpha}" :
                !other.Targets.Order().SequenceEqual(first.Targets.Order()) ?
                    $"target_modules [{string.Join(", ", other.Targets)}], {folders[0]} has [{string.Join(", ", first.Targets)}]" :
                other.Seed != first.Seed ? $"lora_seed = {other.Seed}, {folders[0]} has {first.Seed}" :
                other.UseRsLora != first.UseRsLora ? $"use_rslora = {other.UseRsLora}, {folders[0]} has {first.UseRsLora}" :
                other.Linearized != first.Linearized ? $"linearized = {other.Linearized}, {folders[0]} has {first.Linearized}" :
                !(other.Layers ?? []).Order().SequenceEqual((first.Layers ?? []).Order()) ?
                    $"layers_to_transform [{string.Join(", ", other.Layers ?? [])}], {folders[0]} has [{string.Join(", ", first.Layers ?? [])}]" :
                !(other.RankPattern ?? []).SequenceEqual(first.RankPattern ?? []) || !(other.AlphaPattern ?? []).SequenceEqual(first.AlphaPattern ?? []) ?
                    $"another rank_pattern or alpha_pattern than {folders[0]}" :
                null;
            if (difference is not null)
                throw new ArgumentException($"Adapters are merged on their factors only when they share one initialisation φ0: {folder} has {difference}. " +
                    $"Merge them with {LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Delta}.");
        }
        return first;
    }

    /// <summary>
    /// φ0 is rebuilt from <c>lora_seed</c>; an adapter whose A never moves (L-LoRA with B0 = 0) must hold exactly that A0,
    /// which catches a seed that means another initialisation. A LoRA adapter's A has moved, so its A0 cannot be checked.
    /// </summary>
    private static void CheckInitialization(LoraAdapter initial, IReadOnlyList<LoraAdapter> adapters, IReadOnlyList<string> folders)
    {
        if (!initial.Options.Linearized) return;
        using var scope = NewDisposeScope();
        for (int i = 0; i < adapters.Count; i++)
        {
            // The loaded factors are float32 whatever the file stores; the file's dtype says how finely A0 was kept.
            using var file = Checkpoint.Open(Path.Combine(folders[i], PeftAdapterFolder.WeightsFileName));
            foreach (var start in initial.Modules)
            {
                var a = adapters[i].Module(start.Target.Prefix)!.A.detach();
                var stored = file.GetEntry(PeftAdapterFolder.NameOfA(start.Target.Prefix)).DType.ToScalarType();
                var a0 = start.A0.to_type(stored).to_type(ScalarType.Float32);
                double tolerance = stored is ScalarType.Float16 or ScalarType.BFloat16 ? 1e-2 * a0.abs().max().item<float>() : 1e-6;
                if (!a.to_type(ScalarType.Float32).allclose(a0, rtol: 0, atol: tolerance))
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
