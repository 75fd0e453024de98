using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.LowRank;

/// <summary>
/// A LoRA adapter in the Hugging Face PEFT layout: a folder with <c>adapter_config.json</c> (peft_type LORA, r, lora_alpha,
/// target_modules, base_model_name_or_path) and <c>adapter_model.safetensors</c> holding
/// <c>base_model.model.&lt;layer&gt;.lora_A.weight</c> [r, in] and <c>….lora_B.weight</c> [out, r]. Two fields of our own ride
/// along in the config: <c>linearized</c> (L-LoRA) and <c>lora_seed</c> (the seed of the shared initialisation).
/// </summary>
public static partial class PeftAdapterFolder
{
    /// <summary>The PEFT config file name, <c>adapter_config.json</c>.</summary>
    public const string ConfigFileName = "adapter_config.json";
    /// <summary>The PEFT weights file name, <c>adapter_model.safetensors</c>.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>The prefix PEFT puts before a Hugging Face model's tensor names, <c>base_model.model.</c>.</summary>
    public const string NamePrefix = "base_model.model.";

    [GeneratedRegex(@"^base_model\.model\.(vision_model\.encoder\.layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_0-9]+))\.lora_([AB])\.weight$", RegexOptions.CultureInvariant)]
    private static partial Regex TensorNamePattern();

    /// <summary>True when <paramref name="path"/> is a folder holding an <c>adapter_config.json</c>.</summary>
    public static bool IsAdapter(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, ConfigFileName));

    /// <summary>The tensor names of a layer's factors.</summary>
    public static string NameOfA(string prefix) => NamePrefix + prefix + ".lora_A.weight";
    /// <summary>The tensor name of a layer's B factor (see <see cref="NameOfA"/>).</summary>
    public static string NameOfB(string prefix) => NamePrefix + prefix + ".lora_B.weight";

    /// <summary>
    /// Writes the adapter as a PEFT folder, atomically: into a temporary folder next to it, renamed into place (a folder
    /// already there is replaced).
    /// </summary>
    /// <param name="adapter">The adapter.</param>
    /// <param name="directory">The folder to write.</param>
    /// <param name="baseModel">Recorded as <c>base_model_name_or_path</c>.</param>
    /// <param name="metadata">More entries for the safetensors header's metadata (e.g. how a merged adapter was made).</param>
    public static void Save(LoraAdapter adapter, string directory, string? baseModel = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        string target = Path.GetFullPath(directory);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        string temp = TemporaryFiles.For(target);
        Directory.CreateDirectory(temp);
        try
        {
            File.WriteAllText(Path.Combine(temp, ConfigFileName), ConfigJson(adapter.Options, baseModel) + "\n");
            using (var scope = NewDisposeScope())
            {
                var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var m in adapter.Modules)
                {
                    tensors[NameOfA(m.Target.Prefix)] = m.A.detach().to_type(ScalarType.Float32).cpu();
                    tensors[NameOfB(m.Target.Prefix)] = m.B.detach().to_type(ScalarType.Float32).cpu();
                }
                var header = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["format"] = "pt" };
                SafeTensorsWriter.Save(Path.Combine(temp, WeightsFileName), tensors, header);
            }

            string? old = null;
            if (Directory.Exists(target))
            {
                old = TemporaryFiles.For(target + ".old");
                Directory.Move(target, old);
            }
            Directory.Move(temp, target);
            if (old is not null) Directory.Delete(old, recursive: true);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>PEFT's <c>adapter_config.json</c> for these options, with <c>linearized</c> and <c>lora_seed</c> added.</summary>
    public static string ConfigJson(LoraOptions options, string? baseModel)
    {
        var json = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = null,
            ["base_model_name_or_path"] = baseModel,
            ["r"] = options.Rank,
            ["lora_alpha"] = options.Alpha,
            ["rank_pattern"] = new JsonObject((options.RankPattern ?? []).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
            ["alpha_pattern"] = new JsonObject((options.AlphaPattern ?? []).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
            ["target_modules"] = new JsonArray([.. options.Targets.Select(t => (JsonNode?)JsonValue.Create(t))]),
            ["layers_to_transform"] = options.Layers is null ? null : new JsonArray([.. options.Layers.Select(l => (JsonNode?)JsonValue.Create(l))]),
            ["lora_dropout"] = 0.0,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["use_rslora"] = options.UseRsLora,
            ["init_lora_weights"] = true,
            ["inference_mode"] = true,
            ["modules_to_save"] = null,
            ["linearized"] = options.Linearized,
            ["lora_seed"] = options.Seed,
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// True when the folder's <c>adapter_config.json</c> records <c>lora_seed</c> (adapters made by <c>mlmerge finetune</c>):
    /// only then is the initialisation A0 known. Without it <see cref="ReadOptions"/> reports seed 0.
    /// </summary>
    public static bool RecordsSeed(string directory, VisionTransformerConfig? model = null)
    {
        ReadOptions(directory, model);
        return JsonNode.Parse(File.ReadAllText(Path.Combine(directory, ConfigFileName))) is JsonObject config && config["lora_seed"] is JsonValue;
    }

    /// <summary>Reads the options of an adapter folder's <c>adapter_config.json</c>.</summary>
    /// <param name="directory">The adapter folder.</param>
    /// <param name="model">
    /// The model the adapter is for. PEFT matches <c>target_modules</c> against the model's module names: a pattern (a string)
    /// or names other than the short ones (<c>self_attn.q_proj</c>) are resolved against its layers, and need it.
    /// </param>
    /// <exception cref="InvalidDataException">The file is missing, not LoRA, or uses a PEFT feature this reader does not support.</exception>
    public static LoraOptions ReadOptions(string directory, VisionTransformerConfig? model = null)
    {
        string path = Path.Combine(directory, ConfigFileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{directory} is not a PEFT adapter folder: no {ConfigFileName}.", path);
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
        if (root is not JsonObject config) throw new InvalidDataException($"{path}: expected a JSON object.");
        // Each field read with its expected type; a value of another type is named with its field, not as a .NET cast.
        T? Field<T>(string name, string expected) where T : struct
        {
            if (config[name] is not { } node || node.GetValueKind() == JsonValueKind.Null) return null;
            try
            {
                if (typeof(T) == typeof(int) && node.GetValueKind() == JsonValueKind.Number && node.GetValue<double>() is var number && number == Math.Floor(number)
                    && Math.Abs(number) <= int.MaxValue)
                    return (T)(object)(int)number;
                return node.GetValue<T>();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{path}: '{name}' is {node.ToJsonString()}; expected {expected}.", e);
            }
        }
        string? Text(string name) => config[name] is { } node && node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>()
            : config[name] is { } other && other.GetValueKind() != JsonValueKind.Null ? throw new InvalidDataException($"{path}: '{name}' is {other.ToJsonString()}; expected a string.") : null;

        string peftType = Text("peft_type") ?? "";
        if (peftType != "LORA") throw new InvalidDataException($"{path}: peft_type is '{peftType}'; only LORA adapters are read.");
        if (Field<bool>("fan_in_fan_out", "true or false") == true)
            throw new InvalidDataException($"{path}: fan_in_fan_out = true (weights stored transposed, GPT-2's Conv1D) does not apply to a CLIP vision model.");
        // A rank or alpha per module, in PEFT's order of keys (the first matching key wins).
        List<KeyValuePair<string, T>>? Pattern<T>(string name, string expected) => config[name] switch
        {
            null => null,
            JsonObject entries => [.. entries.Select(e => KeyValuePair.Create(e.Key,
                e.Value is JsonValue v && v.GetValueKind() == JsonValueKind.Number && (typeof(T) != typeof(int) || v.GetValue<double>() == Math.Floor(v.GetValue<double>()))
                    ? (T)Convert.ChangeType(v.GetValue<double>(), typeof(T), CultureInfo.InvariantCulture)
                    : throw new InvalidDataException($"{path}: {name} gives '{e.Key}' {e.Value?.ToJsonString() ?? "null"}; expected {expected}.")))],
            var other when other.GetValueKind() == JsonValueKind.Null => null,
            var other => throw new InvalidDataException($"{path}: {name} is {other.ToJsonString()}; expected an object of module name patterns."),
        };
        var rankPattern = Pattern<int>("rank_pattern", "a positive integer");
        var alphaPattern = Pattern<double>("alpha_pattern", "a number");
        if (Field<bool>("use_dora", "true or false") == true) throw new InvalidDataException($"{path}: DoRA adapters (use_dora = true) are not supported.");
        // PiSSA, OLoRA, LoftQ and CorDA start from factors taken out of the base weights, which PEFT changes to match (EVA and
        // the Gaussian or orthogonal schemes leave the base alone):
        // their factors mean W0' + ΔW on that modified base, not a ΔW on the base this pool has.
        if (config["init_lora_weights"] is { } init && init.GetValueKind() == JsonValueKind.String && init.GetValue<string>() is var scheme
            && !new[] { "gaussian", "orthogonal", "eva" }.Contains(scheme, StringComparer.OrdinalIgnoreCase))
            throw new InvalidDataException($"{path}: init_lora_weights = '{scheme}' initialises from the base weights and changes them; convert the adapter to " +
                "a plain LoRA first (PEFT's save_pretrained with path_initial_model_for_weight_conversion).");
        // PEFT leaves out a module excluded by exclude_modules (a pattern, or names matched whole or by their end) first.
        Func<string, bool>? excludes = config["exclude_modules"] switch
        {
            null => null,
            JsonArray { Count: 0 } => null,
            JsonArray list => list.Select(e => e is { } node && node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>()
                    : throw new InvalidDataException($"{path}: exclude_modules holds {e?.ToJsonString() ?? "null"}; expected module names.")).ToList() is var excludedNames
                ? prefix => excludedNames.Any(n => prefix == n || prefix.EndsWith("." + n, StringComparison.Ordinal)) : null,
            JsonValue one when one.GetValueKind() == JsonValueKind.String => PeftTargets.Pattern(path, one.GetValue<string>(), "exclude_modules") is var excludedPattern
                ? prefix => excludedPattern.IsMatch(prefix) : null,
            JsonValue one when one.GetValueKind() == JsonValueKind.Null => null,
            var other => throw new InvalidDataException($"{path}: exclude_modules is {other.ToJsonString()}; expected a list of module names or a pattern."),
        };
        string excluding = excludes is null ? "" : $" less exclude_modules {config["exclude_modules"]!.ToJsonString()}";
        if (config["layer_replication"] is JsonArray { Count: > 0 })
            throw new InvalidDataException($"{path}: layer_replication (layers repeated to build a deeper model) is not supported.");
        // PEFT saves trained biases and whole modules beside the factors; their changes would be silently lost here.
        if (Text("bias") is { } biasMode && biasMode != "none")
            throw new InvalidDataException($"{path}: bias = '{biasMode}' (PEFT trains biases too and saves them in the adapter) is not supported; only bias = 'none'.");
        if (config["modules_to_save"] is JsonArray { Count: > 0 } saved)
            throw new InvalidDataException($"{path}: modules_to_save [{string.Join(", ", saved.Select(m => m?.ToString()))}] (whole modules trained and saved beside the " +
                "factors, e.g. a classifier) is not supported: give a head to `mlmerge pool add --head` and an adapter of LoRA factors only.");
        if (Field<bool>("lora_bias", "true or false") == true)
            throw new InvalidDataException($"{path}: lora_bias = true (a trained bias on lora_B) is not supported.");
        // Newer PEFT adapts more than target_modules' linear layers with these; the adapter would be read without them.
        if (config["target_parameters"] is JsonArray { Count: > 0 } parameters)
            throw new InvalidDataException($"{path}: target_parameters {parameters.ToJsonString()} (LoRA on parameters rather than modules) is not supported; list the adapted modules in target_modules.");
        if (config["trainable_token_indices"] is { } tokens && tokens.GetValueKind() is not JsonValueKind.Null && !(tokens is JsonArray { Count: 0 } or JsonObject { Count: 0 }))
            throw new InvalidDataException($"{path}: trainable_token_indices {tokens.ToJsonString()} (trained token embeddings saved beside the factors) is not supported.");
        if (config["layers_to_transform"] is not null && config["layers_pattern"] is { } layersPattern
            && (layersPattern is JsonArray patterns ? patterns.Select(p => p?.ToString()) : [layersPattern.ToString()]).Any(p => p is { Length: > 0 } && p != "layers"))
            throw new InvalidDataException($"{path}: layers_pattern is {layersPattern.ToJsonString()}; a CLIP vision encoder's layers are 'layers'.");
        int rank = Field<int>("r", "a positive integer") ?? throw new InvalidDataException($"{path}: no 'r'.");
        // PEFT's LoraConfig default lora_alpha is 8 (it always writes the field; a hand-written config may not).
        double alpha = Field<double>("lora_alpha", "a number") ?? 8;
        IReadOnlyList<int>? layers = config["layers_to_transform"] switch
        {
            null => null,
            JsonArray list => [.. list.Select(l => l is { } node && node.GetValueKind() == JsonValueKind.Number && node.GetValue<double>() is var v && v == Math.Floor(v) ? (int)v
                : throw new InvalidDataException($"{path}: layers_to_transform holds {l?.ToJsonString() ?? "null"}; expected layer indices."))],
            JsonValue one when one.GetValueKind() == JsonValueKind.Number => [Field<int>("layers_to_transform", "a layer index or a list of them")!.Value],
            JsonValue one when one.GetValueKind() == JsonValueKind.Null => null,
            _ => throw new InvalidDataException($"{path}: layers_to_transform must be a layer index or a list of them."),
        };
        IReadOnlyList<string> targets;
        var chosen = layers;
        switch (config["target_modules"])
        {
            case JsonArray array:
                var names = array.Select(t => t is { } node && node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>()
                    : throw new InvalidDataException($"{path}: target_modules holds {t?.ToJsonString() ?? "null"}; expected module names.")).ToList();
                if (excludes is null && names.All(LoraOptions.KnownTargets.Contains))
                {
                    targets = names;
                    break;
                }
                // PEFT's rule for a list: a module whose full name is listed, or whose name ends with '.' + a listed name
                // (only those subject to layers_to_transform).
                (targets, layers) = PeftTargets.Resolve(path, $"target_modules {array.ToJsonString()}{excluding}", model,
                    (layer, prefix) => excludes?.Invoke(prefix) != true
                        && (names.Contains(prefix) || (names.Any(n => prefix.EndsWith("." + n, StringComparison.Ordinal)) && (chosen is null || chosen.Contains(layer)))));
                break;
            case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                string pattern = value.GetValue<string>();
                // PEFT's shorthand for every linear layer but the output layer, then read as a list of their names.
                if (pattern == "all-linear")
                {
                    (targets, layers) = PeftTargets.Resolve(path, $"target_modules 'all-linear'{excluding}", model,
                        (layer, prefix) => excludes?.Invoke(prefix) != true && (chosen is null || chosen.Contains(layer)));
                    break;
                }
                // PEFT matches a pattern against each module's full name (re.fullmatch) and applies no layers_to_transform to it.
                var regex = PeftTargets.Pattern(path, pattern, "target_modules");
                (targets, layers) = PeftTargets.Resolve(path, $"target_modules '{pattern}'{excluding}", model,
                    (_, prefix) => excludes?.Invoke(prefix) != true && regex.IsMatch(prefix));
                break;
            case null:
                throw new InvalidDataException($"{path}: no target_modules.");
            case var other:
                throw new InvalidDataException($"{path}: target_modules is {other.ToJsonString()}; expected a list of module names or a pattern.");
        }
        var options = new LoraOptions
        {
            Rank = rank,
            Alpha = alpha,
            Targets = targets,
            Linearized = Field<bool>("linearized", "true or false") ?? false,
            Seed = Field<int>("lora_seed", "an integer") ?? 0,
            UseRsLora = Field<bool>("use_rslora", "true or false") ?? false,
            Layers = layers,
            RankPattern = rankPattern is { Count: > 0 } ? rankPattern : null,
            AlphaPattern = alphaPattern is { Count: > 0 } ? alphaPattern : null,
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
        return options;
    }

    /// <summary>
    /// Loads an adapter folder for a model of <paramref name="config"/>: every target layer must have both factors with
    /// shapes A [r, in] and B [out, r], no other tensor may be present, and every value must be finite. Errors name the
    /// file, the tensor and what was expected.
    /// </summary>
    public static LoraAdapter Load(string directory, VisionTransformerConfig config)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentNullException.ThrowIfNull(config);
        var options = ReadOptions(directory, config);
        string weights = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(weights)) throw new FileNotFoundException($"{directory}: no {WeightsFileName} beside {ConfigFileName}.", weights);
        using var checkpoint = Checkpoint.Open(weights);
        Dictionary<string, LoraTarget> expected;
        try
        {
            expected = options.TargetsOf(config).ToDictionary(t => t.Prefix, StringComparer.Ordinal);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{Path.Combine(directory, ConfigFileName)}: {e.Message}", e);
        }
        foreach (var entry in checkpoint.Tensors)
        {
            var match = TensorNamePattern().Match(entry.Name);
            if (!match.Success)
                throw new CheckpointFormatException(weights, entry.Name, entry.Name.StartsWith(NamePrefix + "text_model.", StringComparison.Ordinal)
                    // A CLIPModel adapted by a list such as [q_proj, v_proj] has factors in both towers; only the vision tower's are read.
                    ? "a factor of CLIP's text tower: adapters are read for the vision tower only, whose factors are " +
                      $"{NamePrefix}vision_model.encoder.layers.N.…; adapt it alone (target_modules as a pattern such as '.*vision_model.*\\.(q_proj|v_proj)')."
                    : $"not a LoRA factor name; expected {NamePrefix}vision_model.encoder.layers.N.<self_attn|mlp>.<module>.lora_A.weight or .lora_B.weight.");
            if (!expected.ContainsKey(match.Groups[1].Value))
            {
                // Name what leaves the module out: a layer the model does not have (an adapter of a deeper model), the layer
                // selection when the module is a target elsewhere, or the target list.
                int layer = int.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
                bool targeted = options.Targets.Contains(match.Groups[3].Value);
                throw new CheckpointFormatException(weights, entry.Name,
                    layer >= config.Layers
                        ? $"adapts '{match.Groups[1].Value}', and the base model has {config.Layers} layers (0 to {config.Layers - 1}): the adapter was made for another model."
                    : targeted && options.Layers is { } chosen && !chosen.Contains(layer)
                        ? $"adapts '{match.Groups[1].Value}', a layer outside layers_to_transform [{string.Join(", ", chosen)}] ({ConfigFileName}: layers_to_transform)."
                        : $"adapts '{match.Groups[1].Value}', which is not one of the target modules {string.Join(", ", options.Targets)} of a {config.Layers}-layer model ({ConfigFileName}: target_modules).");
            }
        }

        var modules = new List<(LoraTarget Target, Tensor A, Tensor B)>();
        try
        {
            foreach (var target in expected.Values)
            {
                int rank = options.RankOf(target.Prefix);
                string rankSource = rank == options.Rank ? "r" : "rank_pattern";
                var a = ReadFactor(checkpoint, weights, NameOfA(target.Prefix), [rank, target.InFeatures], rankAxis: 0, target, rank, rankSource);
                Tensor b;
                try
                {
                    b = ReadFactor(checkpoint, weights, NameOfB(target.Prefix), [target.OutFeatures, rank], rankAxis: 1, target, rank, rankSource);
                }
                catch
                {
                    a.Dispose();
                    throw;
                }
                modules.Add((target, a, b));
            }

            // The expansion point of a stored adapter is PEFT's initialisation: B0 = 0, and A0 = the stored A (an L-LoRA
            // module's A receives no gradient when B0 = 0, so it is still A0). B is then set to the stored values.
            using var scope = NewDisposeScope();
            var adapter = LoraAdapter.FromInitialization(options, modules.Select(m => (m.Target, m.A, zeros_like(m.B))));
            using (no_grad())
            {
                foreach (var (module, stored) in adapter.Modules.Zip(modules))
                {
                    module.B.copy_(stored.B);
                }
            }
            return adapter;
        }
        finally
        {
            foreach (var (_, a, b) in modules)
            {
                a.Dispose();
                b.Dispose();
            }
        }
    }

    private static Tensor ReadFactor(Checkpoint checkpoint, string file, string name, long[] shape, int rankAxis, LoraTarget target, int rank, string rankSource)
    {
        if (!checkpoint.Contains(name))
            throw new CheckpointFormatException(file, name, $"missing: every target module needs lora_A and lora_B (expected shape [{string.Join(", ", shape)}]).");
        var entry = checkpoint.GetEntry(name);
        if (!entry.DType.IsFloatingPoint())
            throw new CheckpointFormatException(file, name, $"dtype {entry.DType}, expected a floating-point type.");
        if (!entry.Shape.SequenceEqual(shape))
        {
            // A factor whose rank fits but whose other side does not was trained on a model of another width.
            bool rankFits = entry.Shape.Length == 2 && entry.Shape[rankAxis] == rank;
            throw new CheckpointFormatException(file, name, $"shape {entry.ShapeText}, expected [{string.Join(", ", shape)}] " + (rankFits
                ? $"(the base model's {VisionTransformerNames.Weight(target.Prefix)} is [{target.OutFeatures}, {target.InFeatures}]): the adapter was made for another model."
                : $"(r = {rank.ToString(CultureInfo.InvariantCulture)}{(rankSource == "r" ? "" : " from " + rankSource)} in {ConfigFileName})."));
        }
        var tensor = checkpoint.ReadTensor(name).DetachFromDisposeScope();
        using var finite = tensor.isfinite().all();
        if (!finite.item<bool>())
        {
            tensor.Dispose();
            throw new CheckpointFormatException(file, name, "holds NaN or ±∞.");
        }
        return tensor;
    }
}
