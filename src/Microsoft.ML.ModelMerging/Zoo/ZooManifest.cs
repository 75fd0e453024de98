using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.Zoo;

/// <summary>One task of the zoo: where its data comes from, its fixed splits, and the accuracies measured when the zoo was built.</summary>
public sealed record ZooTask
{
    public required string Name { get; init; }
    public required string Source { get; init; }
    public required IReadOnlyList<string> ClassNames { get; init; }
    public required int Train { get; init; }
    public required int Validation { get; init; }
    public required int Test { get; init; }
    /// <summary>SHA-256 of each split's pixels and labels: a rebuilt data set that differs is noticed.</summary>
    public required IReadOnlyDictionary<string, string> Fingerprints { get; init; }
    public required string Expert { get; init; }
    public required string Head { get; init; }
    public required SplitAccuracy PretrainedLinearProbe { get; init; }
    public required SplitAccuracy Individual { get; init; }
}

/// <summary>The pre-training stage as built: corpus, classes, size, fingerprint, accuracy of its own head on held-out glyphs.</summary>
public sealed record ZooPretraining
{
    public required string Corpus { get; init; }
    public required int Classes { get; init; }
    public required int Train { get; init; }
    public required string Fingerprint { get; init; }
    public required double ValidationAccuracy { get; init; }
}

/// <summary>
/// <c>zoo.json</c>: everything a user or a test needs to know about the committed zoo. Deterministic content (no timings), so a
/// rebuild that reproduces the zoo reproduces this file too.
/// </summary>
public sealed record ZooManifest
{
    public const string FileName = "zoo.json";
    public const string PretrainedFileName = "pretrained.safetensors";

    public int Format { get; init; } = 1;
    public required string RecipeHash { get; init; }
    public required JsonElement Recipe { get; init; }
    public required JsonElement Model { get; init; }
    public required string Pretrained { get; init; }
    public required ZooPretraining Pretraining { get; init; }
    public required IReadOnlyList<ZooTask> Tasks { get; init; }

    [JsonIgnore]
    public VisionTransformerConfig ModelConfig => VisionTransformerConfig.FromJson(Model.GetRawText());

    public ZooTask Task(string name) => Tasks.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"The zoo has no task '{name}'; it has {string.Join(", ", Tasks.Select(t => t.Name))}.");

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Options);

    public static ZooManifest Read(string zoo)
    {
        string path = Directory.Exists(zoo) ? Path.Combine(zoo, FileName) : zoo;
        if (!File.Exists(path)) throw new FileNotFoundException($"No {FileName} at {path}: is this a zoo directory (see `mlmerge zoo build`)?", path);
        try
        {
            return JsonSerializer.Deserialize<ZooManifest>(File.ReadAllText(path), Options)
                ?? throw new ArgumentException($"{path}: empty manifest.");
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{path}: not a valid zoo manifest: {e.Message}");
        }
    }

    public void Write(string directory)
    {
        string path = Path.Combine(directory, FileName);
        string temp = path + ".partial";
        File.WriteAllText(temp, ToJson() + "\n");
        File.Move(temp, path, overwrite: true);
    }
}
