using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Configuration;
using Microsoft.ML.ModelMerging.LowRank;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>One expert of a merge job: its checkpoint and the weight w_i scaling its task vector.</summary>
public sealed record MergeJobExpert(string Path, double Weight = 1.0);

/// <summary>
/// A complete streaming merge as the command line or a config file states it: method and parameters, inputs, output and
/// output options. <see cref="Run"/> validates everything before reading any tensor.
/// </summary>
public sealed record MergeJob
{
    /// <summary>The registry name of the merge method, e.g. <c>ties</c>.</summary>
    public required string Method { get; init; }
    /// <summary>The method's parameters as text (<c>lambda</c> → <c>0.3</c>); missing ones take their declared defaults.</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
    /// <summary>The pre-trained base checkpoint θ0 (file, index or directory).</summary>
    public required string Base { get; init; }
    /// <summary>The fine-tuned experts θ_i with their weights w_i, in order.</summary>
    public required IReadOnlyList<MergeJobExpert> Experts { get; init; }
    /// <summary>The output: a <c>.safetensors</c> file, or a directory (sharded with <see cref="MaxShardBytes"/>).</summary>
    public required string Output { get; init; }
    /// <summary>The stored dtype of floating outputs; null keeps the base's dtype.</summary>
    public SafeTensorsDType? OutputDType { get; init; }
    /// <summary>Regular expressions of tensor names copied from the base instead of merged (besides the default exclusions: heads, <c>position_ids</c>).</summary>
    public IReadOnlyList<string> Exclude { get; init; } = Array.Empty<string>();
    /// <summary>Maximum data bytes per shard; null writes one file.</summary>
    public long? MaxShardBytes { get; init; }
    /// <summary>Let experts lack tensors (left unchanged there) or hold extra ones (ignored).</summary>
    public bool AllowMissing { get; init; }

    /// <summary>Resolves the method and its parameters, then runs the streaming merge to <see cref="Output"/>.</summary>
    /// <param name="progress">Receives a report per tensor and pass; optional.</param>
    /// <param name="cancellation">Stops the merge cleanly (no output appears).</param>
    /// <param name="registry">Where <see cref="Method"/> is looked up; <see cref="MergeMethodRegistry.Default"/> when null.</param>
    /// <returns>What was merged, copied and written.</returns>
    /// <exception cref="ArgumentException">An unknown method or parameter, a value out of range, or no expert.</exception>
    /// <exception cref="MergeInputException">The inputs do not fit together (missing tensor, shape, NaN, ...).</exception>
    public StreamingMergeReport Run(IProgress<StreamingMergeProgress>? progress = null, CancellationToken cancellation = default,
        MergeMethodRegistry? registry = null)
    {
        registry ??= MergeMethodRegistry.Default;
        if (Experts.Count == 0) throw new ArgumentException("A merge needs at least one expert.");
        var descriptor = registry.Get(Method);
        // adapter-space is the job's, not the method's: it says what the method merges when the experts are LoRA adapters.
        var (space, methodParameters, spaceGiven) = LoraMergeSpaces.Split(new MergeParameters(Parameters), descriptor.Name);
        var resolved = methodParameters.Resolve(descriptor);
        var method = descriptor.Create(methodParameters);
        if (spaceGiven && method.ProducesTaskSpecificWeights)
            throw new ArgumentException($"{LoraMergeSpaces.ParameterName} is for methods that give one model; {descriptor.Name} gives each task its own weights.");
        var weights = Experts.All(e => e.Weight == 1.0) ? null : Experts.Select(e => e.Weight).ToList();
        if (space == LoraMergeSpaces.Factors) return MergeAdapterFactors(method, resolved, weights, cancellation);
        // A dense model written into an adapter folder would be shadowed by the adapter: every reader takes the folder as the adapter.
        if (PeftAdapterFolder.IsAdapter(Output))
            throw new ArgumentException($"--out {Output} is a LoRA adapter folder; the merged model would be written beside the adapter and read as the adapter. " +
                "Choose another path (with --param adapter-space=factors the merge is an adapter and replaces it).");
        var driver = new StreamingMergeDriver(new TensorFilter(Exclude));
        return driver.Merge(method, Base, Experts.Select(e => e.Path).ToList(), Output, new StreamingMergeOptions
        {
            OutputDType = OutputDType,
            MaxShardBytes = MaxShardBytes,
            AllowMissing = AllowMissing,
            ExpertWeights = weights,
            RecordedParameters = resolved.ToText(), // every parameter, defaults included
            Progress = progress,
        }, cancellation);
    }

    /// <summary>
    /// The experts are LoRA adapter folders merged on their factors (<see cref="LoraFactorMerge"/>): the result is one adapter,
    /// written as a PEFT folder at <see cref="Output"/> (atomically), whose base is <see cref="Base"/>.
    /// </summary>
    private StreamingMergeReport MergeAdapterFactors(IMergeMethod method, ResolvedMergeParameters resolved, IReadOnlyList<double>? weights,
        CancellationToken cancellation)
    {
        string factors = $"{LoraMergeSpaces.ParameterName}={LoraMergeSpaces.Factors}";
        var notAdapter = Experts.FirstOrDefault(e => !PeftAdapterFolder.IsAdapter(e.Path));
        if (notAdapter is not null)
            throw new ArgumentException($"{factors} merges LoRA adapter folders on their factors; {notAdapter.Path} is not one (no {PeftAdapterFolder.ConfigFileName}).");
        var ignored = new[] { ("dtype", OutputDType is not null), ("shard size", MaxShardBytes is not null), ("exclude", Exclude.Count > 0), ("allow-missing", AllowMissing) }
            .Where(o => o.Item2).Select(o => o.Item1).ToList();
        if (ignored.Count > 0)
            throw new ArgumentException($"{factors} writes an adapter folder, which takes no {string.Join(", ", ignored)}.");
        string output = Path.TrimEndingDirectorySeparator(Output);
        if (output.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"{factors} writes the merged adapter as a PEFT folder: give --out a folder, not the file {Output}.");
        // The folder is replaced whole: only an adapter folder (its two files and nothing else) may be there already.
        if (Directory.Exists(output) && !(PeftAdapterFolder.IsAdapter(output) && Directory.EnumerateFileSystemEntries(output)
                .Select(Path.GetFileName).All(n => n is PeftAdapterFolder.ConfigFileName or PeftAdapterFolder.WeightsFileName)))
            throw new ArgumentException($"--out {Output} exists and is not an adapter folder; the merged adapter replaces its folder whole, so choose a new path.");
        OutputOverlap.EnsureDistinct(output, Experts
            .SelectMany(e => new[] { Path.Combine(e.Path, PeftAdapterFolder.ConfigFileName), Path.Combine(e.Path, PeftAdapterFolder.WeightsFileName) })
            .Append(Base));
        var config = Models.ModelCheckpoints.ReadConfig(Base);
        cancellation.ThrowIfCancellationRequested();
        using var merged = LoraFactorMerge.Merge(method, [.. Experts.Select(e => e.Path)], config, weights);
        cancellation.ThrowIfCancellationRequested();
        // Like a dense merge, the merged adapter records its inputs: `export-onnx` then picks the heads of the experts it merged.
        var inputs = new List<Dictionary<string, string>>();
        using (var baseCheckpoint = Checkpoint.Open(Base)) inputs.Add(StreamingMergeDriver.Fingerprint("base", baseCheckpoint));
        for (int i = 0; i < Experts.Count; i++)
        {
            using var weightsFile = Checkpoint.Open(Path.Combine(Experts[i].Path, PeftAdapterFolder.WeightsFileName));
            var input = StreamingMergeDriver.Fingerprint($"expert {i}", weightsFile);
            input["path"] = Path.TrimEndingDirectorySeparator(Path.GetFullPath(Experts[i].Path));
            inputs.Add(input);
        }

        PeftAdapterFolder.Save(merged, output, Path.GetFullPath(Base), new Dictionary<string, string>
        {
            [StreamingMergeDriver.InputsMetadataKey] = JsonSerializer.Serialize(inputs),
            [StreamingMergeDriver.MethodMetadataKey] = method.Name,
            [StreamingMergeDriver.ParametersMetadataKey] = JsonSerializer.Serialize(new SortedDictionary<string, string>(
                resolved.ToText().Append(KeyValuePair.Create(LoraMergeSpaces.ParameterName, LoraMergeSpaces.Factors)).ToDictionary())),
        });
        var names = merged.Modules.SelectMany(m => new[] { PeftAdapterFolder.NameOfA(m.Target.Prefix), PeftAdapterFolder.NameOfB(m.Target.Prefix) }).ToList();
        long bytes = new FileInfo(Path.Combine(output, PeftAdapterFolder.WeightsFileName)).Length;
        return new StreamingMergeReport(Path.GetFullPath(output), names, [], 1, bytes);
    }

    /// <summary>
    /// Reads a job from a JSON or YAML config. Relative paths are relative to the config file. Shape:
    /// <code>
    /// method: ties
    /// base: pretrained.safetensors
    /// experts:
    ///   - path: a.safetensors
    ///     weight: 1.0
    ///   - b.safetensors
    /// out: merged.safetensors
    /// parameters: { lambda: 0.3, keep: 0.2 }
    /// dtype: bf16
    /// exclude: [ "^head\\." ]
    /// shard_size: 5GB
    /// allow_missing: false
    /// </code>
    /// </summary>
    public static MergeJob FromConfigFile(string path)
    {
        string text = File.ReadAllText(path);
        bool yaml = path.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".yml", StringComparison.OrdinalIgnoreCase);
        JsonNode? root;
        try
        {
            root = yaml ? YamlConfig.Parse(text) : JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new ArgumentException($"{path}: {e.Message}", e);
        }
        if (root is not JsonObject obj) throw new ArgumentException($"{path}: the config must be a mapping of settings.");
        try
        {
            return FromConfig(obj, path);
        }
        catch (ArgumentException e) when (!e.Message.StartsWith(path, StringComparison.Ordinal))
        {
            throw new ArgumentException($"{path}: {e.Message}", e);
        }
    }

    private static readonly string[] KnownSettings =
        ["allow_missing", "base", "dtype", "exclude", "experts", "method", "out", "output", "parameters", "shard_size"];

    private static MergeJob FromConfig(JsonObject obj, string path)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string Resolve(string p) => Path.IsPathRooted(p) ? p : Path.Combine(directory, p);
        string Required(string key, string? alternative = null) =>
            Scalar(obj[key], key) ?? (alternative is null ? null : Scalar(obj[alternative], alternative))
            ?? throw new ArgumentException($"missing '{key}'.");

        foreach (var (key, _) in obj)
        {
            if (!KnownSettings.Contains(key, StringComparer.Ordinal))
                throw new ArgumentException($"unknown setting '{key}' (expected one of {string.Join(", ", KnownSettings)}).");
        }
        if (obj.ContainsKey("out") && obj.ContainsKey("output")) throw new ArgumentException("give the output as 'out' or 'output', not both.");

        var experts = new List<MergeJobExpert>();
        if (obj["experts"] is not JsonArray list || list.Count == 0) throw new ArgumentException("'experts' must be a non-empty list.");
        foreach (var item in list)
        {
            if (item is JsonObject e)
            {
                foreach (var (key, _) in e)
                {
                    if (key is not ("path" or "weight"))
                        throw new ArgumentException($"unknown expert setting '{key}' (expected path and optionally weight).");
                }
                string expertPath = Scalar(e["path"], "path") ?? throw new ArgumentException("an expert has no 'path'.");
                string? weight = Scalar(e["weight"], "weight");
                experts.Add(new MergeJobExpert(Resolve(expertPath), weight is null ? 1.0 : ParseDouble(weight, $"the weight of expert '{expertPath}'")));
            }
            else
            {
                experts.Add(new MergeJobExpert(Resolve(Scalar(item, "experts") ?? throw new ArgumentException("an expert entry is empty."))));
            }
        }

        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        switch (obj["parameters"])
        {
            case null:
                break;
            case JsonObject p:
                foreach (var (k, v) in p)
                {
                    string value = v is JsonArray values
                        ? string.Join(",", values.Select(x => Scalar(x, k)))       // a per-expert list: [0.2, 0.4]
                        : Scalar(v, k) ?? throw new ArgumentException($"parameter '{k}' has no value.");
                    if (!parameters.TryAdd(k, value)) throw new ArgumentException($"parameter '{k}' is given more than once.");
                }
                break;
            default:
                throw new ArgumentException("'parameters' must be a mapping of name: value.");
        }

        var exclude = obj["exclude"] switch
        {
            null => new List<string>(),
            JsonArray a => a.Select(x => Scalar(x, "exclude") ?? "").Where(x => x.Length > 0).ToList(),
            var single => new List<string> { Scalar(single, "exclude")! },
        };
        return new MergeJob
        {
            Method = Required("method"),
            Base = Resolve(Required("base")),
            Experts = experts,
            Output = Resolve(Required("out", alternative: "output")),
            Parameters = parameters,
            OutputDType = Scalar(obj["dtype"], "dtype") is { } d ? SafeTensorsDTypes.ParseFloatOption(d) : null,
            Exclude = exclude,
            MaxShardBytes = Scalar(obj["shard_size"], "shard_size") is { } s ? CheckpointWriter.ParseSize(s) : null,
            AllowMissing = Scalar(obj["allow_missing"], "allow_missing") is { } m && ParseBoolean(m, "allow_missing"),
        };
    }

    private static string? Scalar(JsonNode? node, string key) => node switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        JsonValue v => v.ToJsonString(),
        _ => throw new ArgumentException($"'{key}' must be a single value, got {node.ToJsonString()}."),
    };

    private static bool ParseBoolean(string text, string key) =>
        bool.TryParse(text, out bool value) ? value : throw new ArgumentException($"'{key}' must be true or false, got '{text}'.");

    private static double ParseDouble(string text, string what) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
            ? v : throw new ArgumentException($"{what} must be a number, got '{text}'.");
}
