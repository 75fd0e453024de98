using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Configuration;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>One expert of a merge job: its checkpoint and the weight w_i scaling its task vector.</summary>
public sealed record MergeJobExpert(string Path, double Weight = 1.0);

/// <summary>
/// A complete streaming merge as the command line or a config file states it: method and parameters, inputs, output and
/// output options. <see cref="Run"/> validates everything before reading any tensor.
/// </summary>
public sealed record MergeJob
{
    public required string Method { get; init; }
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
    public required string Base { get; init; }
    public required IReadOnlyList<MergeJobExpert> Experts { get; init; }
    public required string Output { get; init; }
    public SafeTensorsDType? OutputDType { get; init; }
    public IReadOnlyList<string> Exclude { get; init; } = Array.Empty<string>();
    public long? MaxShardBytes { get; init; }
    public bool AllowMissing { get; init; }

    public StreamingMergeReport Run(IProgress<StreamingMergeProgress>? progress = null, CancellationToken cancellation = default,
        MergeMethodRegistry? registry = null)
    {
        registry ??= MergeMethodRegistry.Default;
        if (Experts.Count == 0) throw new ArgumentException("A merge needs at least one expert.");
        var method = registry.Create(Method, new MergeParameters(Parameters));
        var weights = Experts.All(e => e.Weight == 1.0) ? null : Experts.Select(e => e.Weight).ToList();
        var driver = new StreamingMergeDriver(new TensorFilter(Exclude));
        return driver.Merge(method, Base, Experts.Select(e => e.Path).ToList(), Output, new StreamingMergeOptions
        {
            OutputDType = OutputDType,
            MaxShardBytes = MaxShardBytes,
            AllowMissing = AllowMissing,
            ExpertWeights = weights,
            RecordedParameters = Parameters,
            Progress = progress,
        }, cancellation);
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
            root = yaml ? SimpleYaml.Parse(text) : JsonNode.Parse(text);
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new ArgumentException($"{path}: {e.Message}");
        }
        if (root is not JsonObject obj) throw new ArgumentException($"{path}: the config must be a mapping of settings.");
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string Resolve(string p) => Path.IsPathRooted(p) ? p : Path.Combine(directory, p);
        string Required(string key) => Scalar(obj[key]) ?? throw new ArgumentException($"{path}: missing '{key}'.");

        var known = new HashSet<string> { "method", "base", "experts", "out", "output", "parameters", "dtype", "exclude", "shard_size", "allow_missing" };
        foreach (var (key, _) in obj)
            if (!known.Contains(key)) throw new ArgumentException($"{path}: unknown setting '{key}' (expected one of {string.Join(", ", known.Order())}).");

        var experts = new List<MergeJobExpert>();
        if (obj["experts"] is not JsonArray list || list.Count == 0) throw new ArgumentException($"{path}: 'experts' must be a non-empty list.");
        foreach (var item in list)
        {
            if (item is JsonObject e)
            {
                string expertPath = Scalar(e["path"]) ?? throw new ArgumentException($"{path}: an expert has no 'path'.");
                string? weight = Scalar(e["weight"]);
                experts.Add(new MergeJobExpert(Resolve(expertPath), weight is null ? 1.0 : ParseDouble(weight, $"{path}: expert '{expertPath}' weight")));
            }
            else
            {
                experts.Add(new MergeJobExpert(Resolve(Scalar(item) ?? throw new ArgumentException($"{path}: an expert entry is empty."))));
            }
        }
        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (obj["parameters"] is JsonObject p)
            foreach (var (k, v) in p) parameters[k] = Scalar(v) ?? throw new ArgumentException($"{path}: parameter '{k}' has no value.");
        var exclude = obj["exclude"] switch
        {
            null => new List<string>(),
            JsonArray a => a.Select(x => Scalar(x) ?? "").Where(x => x.Length > 0).ToList(),
            var single => new List<string> { Scalar(single)! },
        };
        return new MergeJob
        {
            Method = Required("method"),
            Base = Resolve(Required("base")),
            Experts = experts,
            Output = Resolve(Scalar(obj["out"]) ?? Required("output")),
            Parameters = parameters,
            OutputDType = Scalar(obj["dtype"]) is { } d ? SafeTensorsDTypes.ParseFloatOption(d) : null,
            Exclude = exclude,
            MaxShardBytes = Scalar(obj["shard_size"]) is { } s ? CheckpointWriter.ParseSize(s) : null,
            AllowMissing = Scalar(obj["allow_missing"]) is { } m && bool.Parse(m),
        };
    }

    private static string? Scalar(JsonNode? node) => node switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        JsonValue v => v.ToJsonString(),
        _ => throw new ArgumentException($"expected a single value, got {node.ToJsonString()}"),
    };

    private static double ParseDouble(string text, string what) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
            ? v : throw new ArgumentException($"{what} must be a number, got '{text}'.");
}
