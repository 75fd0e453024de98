using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.LowRank;

/// <summary>How an expert is fine-tuned: every backbone weight, a LoRA adapter, or a partially linearised LoRA adapter.</summary>
public static class FineTuningModes
{
    /// <summary>Every backbone weight trained (the zoo's experts).</summary>
    public const string Full = "full";
    /// <summary>A LoRA adapter per target linear layer: ΔW = (alpha/r)·B·A.</summary>
    public const string Lora = "lora";
    /// <summary>Each LoRA module replaced by its first-order Taylor expansion around its initialisation (L-LoRA).</summary>
    public const string LinearizedLora = "l-lora";

    /// <summary>Every mode: <c>full</c>, <c>lora</c>, <c>l-lora</c>.</summary>
    public static IReadOnlyList<string> All { get; } = [Full, Lora, LinearizedLora];

    /// <summary>The mode named <paramref name="text"/> (case-insensitive), or an error listing the accepted ones.</summary>
    public static string Parse(string text) =>
        All.FirstOrDefault(m => string.Equals(m, text?.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"Unknown fine-tuning mode '{text}': use {string.Join(", ", All)}.");
}

/// <summary>
/// A LoRA adapter's shape and initialisation, as PEFT's <c>LoraConfig</c> has them: rank r, lora_alpha (scale alpha/r),
/// the target modules by short name, and the seed of the shared initialisation φ0 = (A0, B0).
/// </summary>
public sealed record LoraOptions
{
    /// <summary>The short names a target may have: the linear layers of a CLIP encoder block.</summary>
    public static IReadOnlyList<string> KnownTargets { get; } = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"];

    /// <summary>The rank r of every adapter (default 16).</summary>
    public int Rank { get; init; } = 16;
    /// <summary>PEFT's lora_alpha; the scale is alpha/r (default 32).</summary>
    public double Alpha { get; init; } = 32;
    /// <summary>Short names of the target linear layers [q_proj, v_proj].</summary>
    public IReadOnlyList<string> Targets { get; init; } = ["q_proj", "v_proj"];
    /// <summary>Seed of A0 (Kaiming-uniform); every task of a pool shares it, so their adapters start from one φ0.</summary>
    public int Seed { get; init; }
    /// <summary>True for L-LoRA: the modules are linearised around φ0.</summary>
    public bool Linearized { get; init; }
    /// <summary>rsLoRA's scale alpha/√r instead of alpha/r (PEFT's <c>use_rslora</c>); read from adapters made elsewhere.</summary>
    public bool UseRsLora { get; init; }

    /// <summary>
    /// The encoder layers adapted (PEFT's <c>layers_to_transform</c>); null (default) adapts the target modules of every layer.
    /// </summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>
    /// PEFT's <c>rank_pattern</c>: a rank for the modules whose full name matches a key (the first key, in order, that
    /// matches <c>(^|.*\.)key$</c> from the start of the name, as PEFT matches it); null or empty: every module has <see cref="Rank"/>.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, int>>? RankPattern { get; init; }

    /// <summary>PEFT's <c>alpha_pattern</c>: a lora_alpha per module, matched as <see cref="RankPattern"/>.</summary>
    public IReadOnlyList<KeyValuePair<string, double>>? AlphaPattern { get; init; }

    /// <summary>The factor s of ΔW = s·B·A of a module without a pattern (see <see cref="ScaleOf"/>).</summary>
    public double Scale => ScaleFor(Alpha, Rank);

    /// <summary>The rank of a module: its <see cref="RankPattern"/> entry, else <see cref="Rank"/>.</summary>
    public int RankOf(string prefix) => PatternValue(RankPattern, prefix) is { } rank ? rank : Rank;

    /// <summary>The factor s of a module's ΔW = s·B·A: its alpha over its rank (over the rank's square root with rsLoRA).</summary>
    public double ScaleOf(string prefix)
    {
        double alpha = PatternValue(AlphaPattern, prefix) is { } own ? own : Alpha;
        return ScaleFor(alpha, RankOf(prefix));
    }

    private double ScaleFor(double alpha, int rank) => UseRsLora ? alpha / Math.Sqrt(rank) : alpha / rank;

    /// <summary>True when some module's rank or alpha comes from a pattern.</summary>
    public bool HasPatterns => RankPattern is { Count: > 0 } || AlphaPattern is { Count: > 0 };

    private static T? PatternValue<T>(IReadOnlyList<KeyValuePair<string, T>>? pattern, string prefix) where T : struct
    {
        if (pattern is null) return null;
        foreach (var (key, value) in pattern)
        {
            // PEFT: re.match(rf"(^|.*\.){key}$", name), the key spliced in as written.
            if (Regex.IsMatch(prefix, $"\\A(?:(^|.*\\.){key}$)", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1))) return value;
        }
        return null;
    }

    /// <summary>The mode these options train: <see cref="FineTuningModes.Lora"/> or <see cref="FineTuningModes.LinearizedLora"/>.</summary>
    public string Mode => Linearized ? FineTuningModes.LinearizedLora : FineTuningModes.Lora;

    /// <summary>Checks rank, alpha and targets.</summary>
    /// <exception cref="ArgumentException">A non-positive rank or alpha, no target, an unknown or repeated target.</exception>
    public void Validate()
    {
        if (Rank <= 0) throw new ArgumentException($"The LoRA rank must be positive, got {Rank}.");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) throw new ArgumentException($"lora_alpha must be positive and finite, got {Alpha.ToString(CultureInfo.InvariantCulture)}.");
        if (Targets.Count == 0) throw new ArgumentException("No LoRA target modules: name at least one of " + string.Join(", ", KnownTargets) + ".");
        foreach (var t in Targets)
            if (!KnownTargets.Contains(t))
                throw new ArgumentException($"Unknown LoRA target module '{t}': use {string.Join(", ", KnownTargets)}.");
        if (Targets.Distinct(StringComparer.Ordinal).Count() != Targets.Count) throw new ArgumentException($"A LoRA target module is named twice: {string.Join(",", Targets)}.");
        if (Layers is { Count: 0 }) throw new ArgumentException("layers_to_transform is empty: name at least one layer, or leave it out to adapt every layer.");
        if (Layers is not null && Layers.Any(l => l < 0)) throw new ArgumentException($"layers_to_transform [{string.Join(", ", Layers)}] names a negative layer.");
        if (RankPattern?.FirstOrDefault(p => p.Value <= 0) is { Key: { } badRank } rankEntry)
            throw new ArgumentException($"rank_pattern gives '{badRank}' the rank {rankEntry.Value}; a rank must be positive.");
        if (AlphaPattern?.FirstOrDefault(p => !(p.Value > 0) || double.IsInfinity(p.Value)) is { Key: { } badAlpha } alphaEntry)
            throw new ArgumentException($"alpha_pattern gives '{badAlpha}' lora_alpha {alphaEntry.Value.ToString(CultureInfo.InvariantCulture)}; it must be positive and finite.");
        foreach (string key in (RankPattern ?? []).Select(p => p.Key).Concat((AlphaPattern ?? []).Select(p => p.Key)))
        {
            try
            {
                _ = new Regex(key);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"The rank_pattern or alpha_pattern key '{key}' is not a regular expression: {e.Message}", e);
            }
        }
    }

    /// <summary>Parses a comma-separated target list such as <c>q_proj,v_proj</c>.</summary>
    public static IReadOnlyList<string> ParseTargets(string text) =>
        [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];

    /// <summary>The short name of a block linear layer's prefix (<c>vision_model.encoder.layers.3.self_attn.q_proj</c> → <c>q_proj</c>).</summary>
    public static string ShortName(string prefix) => prefix[(prefix.LastIndexOf('.') + 1)..];

    /// <summary>Every targeted layer of a model: its prefix and the shape [out, in] of its weight, in layer order.</summary>
    public IReadOnlyList<LoraTarget> TargetsOf(VisionTransformerConfig config)
    {
        if (Layers is not null && Layers.Where(l => l >= config.Layers).ToList() is { Count: > 0 } beyond)
            throw new ArgumentException($"layers_to_transform names layer {beyond[0]}, and the model has {config.Layers} (0 to {config.Layers - 1}).");
        var targets = new List<LoraTarget>();
        for (int layer = 0; layer < config.Layers; layer++)
        {
            if (Layers is not null && !Layers.Contains(layer)) continue;
            foreach (string prefix in VisionTransformerNames.Layer(layer).Linears)
            {
                string shortName = ShortName(prefix);
                if (!Targets.Contains(shortName)) continue;
                (long outFeatures, long inFeatures) = shortName switch
                {
                    "fc1" => ((long)config.MlpSize, (long)config.Width),
                    "fc2" => (config.Width, config.MlpSize),
                    _ => (config.Width, config.Width),
                };
                targets.Add(new LoraTarget(prefix, inFeatures, outFeatures));
            }
        }
        return targets;
    }
}

/// <summary>One adapted linear layer: its prefix in the model and its weight's shape [<see cref="OutFeatures"/>, <see cref="InFeatures"/>].</summary>
public sealed record LoraTarget(string Prefix, long InFeatures, long OutFeatures);
