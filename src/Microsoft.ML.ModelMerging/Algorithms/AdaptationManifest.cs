using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>What a finished (or interrupted) <see cref="AdaptationJob"/> recorded: completed steps, loss, time and result files.</summary>
public sealed record AdaptationOutcome
{
    /// <summary>Adaptation steps completed (0 for Fisher and RegMean).</summary>
    public required int CompletedSteps { get; init; }

    /// <summary>Loss of the last step (sum over tasks of the mean entropy); null for Fisher and RegMean.</summary>
    public double? FinalLoss { get; init; }

    /// <summary>Wall time of the work, summed over the invocations that did it (a resumed run adds its part).</summary>
    public required double Seconds { get; init; }

    /// <summary>The result files, relative to the directory.</summary>
    public required IReadOnlyList<string> Files { get; init; }
}

/// <summary>
/// <c>adaptation.json</c> in the output directory of <see cref="AdaptationJob"/>: the method, the settings that decide
/// the result, the tasks (in expert order), the pool they came from, and once finished the outcome.
/// Written before any work starts, so re-running the same command knows what the directory holds.
/// </summary>
public sealed record AdaptationManifest
{
    /// <summary>The manifest's file name in a result directory, <c>adaptation.json</c>.</summary>
    public const string FileName = "adaptation.json";

    /// <summary>Version of the manifest's layout (2).</summary>
    public int Format { get; init; } = 2;

    /// <summary>Registry name of the algorithm (<see cref="IMergeAlgorithm.Name"/>).</summary>
    public required string Method { get; init; }

    /// <summary>Every declared parameter of the algorithm with the value used (given or default), as canonical invariant text.</summary>
    public required IReadOnlyDictionary<string, string> Settings { get; init; }

    /// <summary>Task names in expert order: the order of the routers' outputs and of AdaMerging's coefficients.</summary>
    public required IReadOnlyList<string> Tasks { get; init; }

    /// <summary>Identity of the pool the experts and heads came from (<see cref="PoolManifest.Identity"/>); loading checks it.</summary>
    public required string PoolIdentity { get; init; }

    /// <summary>
    /// Content fingerprints of the base, experts and heads the run read (<see cref="ExpertPool.InputFingerprints"/>):
    /// a directory copied next to another pool, or a pool whose expert was replaced, is not this run. Null in manifests
    /// written before it was recorded.
    /// </summary>
    public IReadOnlyDictionary<string, string>? Inputs { get; init; }

    /// <summary>Full path of the pool directory at run time (informative).</summary>
    public required string Zoo { get; init; }

    /// <summary>Which data the method read: the unlabeled test split (TTA) or labeled training examples.</summary>
    public required string Data { get; init; }

    /// <summary>How often checkpoints were written (not part of the run's identity).</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Null until the run has finished.</summary>
    public AdaptationOutcome? Result { get; init; }

    /// <summary>The manifest of a run of <paramref name="algorithm"/> on <paramref name="pool"/>, before it starts.</summary>
    public static AdaptationManifest For(ExpertPool pool, IMergeAlgorithm algorithm, MergeParameters parameters, int checkpointEvery)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(algorithm);
        ArgumentNullException.ThrowIfNull(parameters);
        // Canonical text of the resolved values: `lr 0.0001` and `learning-rate=1e-4` are the same run.
        var settings = new SortedDictionary<string, string>(parameters.Resolve(algorithm.Name, algorithm.Parameters).ToText().ToDictionary(), StringComparer.Ordinal);
        return new AdaptationManifest
        {
            Method = algorithm.Name,
            Settings = settings,
            Tasks = pool.TaskNames,
            PoolIdentity = pool.Manifest.Identity,
            Inputs = pool.InputFingerprints(),
            Zoo = Path.GetFullPath(pool.Directory),
            Data = algorithm.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages)
                ? "unlabeled test split of every task"
                : $"{(settings.TryGetValue("examples", out var n) ? n : "some")} labeled training examples per task (stratified, seed {(settings.TryGetValue("seed", out var seed) ? seed : "0")})",
            CheckpointEvery = checkpointEvery,
        };
    }

    /// <summary>True when <paramref name="other"/> describes the same run (method, settings, tasks, pool and its inputs).</summary>
    public bool IsSameRunAs(AdaptationManifest other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Method == other.Method
            && PoolIdentity == other.PoolIdentity
            && ChangedInputs(other.Inputs).Count == 0
            && Tasks.SequenceEqual(other.Tasks, StringComparer.Ordinal)
            && Settings.Count == other.Settings.Count
            && Settings.All(kv => other.Settings.TryGetValue(kv.Key, out string? value) && value == kv.Value);
    }

    /// <summary>
    /// The inputs whose fingerprint differs from <paramref name="current"/>'s (missing on either side counts), e.g.
    /// <c>expert:scenes</c>; empty when either side has no record (a manifest older than the record).
    /// </summary>
    /// <param name="current">The fingerprints to compare with (<see cref="ExpertPool.InputFingerprints"/>).</param>
    /// <param name="tasks">Compare only the base and these tasks' inputs (default: every input either side records).</param>
    public IReadOnlyList<string> ChangedInputs(IReadOnlyDictionary<string, string>? current, IReadOnlyCollection<string>? tasks = null)
    {
        if (Inputs is null || current is null) return [];
        // Records made before the images were fingerprinted (no data: keys) still compare their models.
        bool recordsData = Inputs.Keys.Any(k => k.StartsWith("data:", StringComparison.Ordinal));
        bool Compared(string key) => (tasks is null || key == "base" || tasks.Contains(key[(key.IndexOf(':') + 1)..]))
            && (recordsData || !key.StartsWith("data:", StringComparison.Ordinal));
        return [.. Inputs.Keys.Union(current.Keys).Where(Compared).Order(StringComparer.Ordinal)
            .Where(k => !Inputs.TryGetValue(k, out var mine) || !current.TryGetValue(k, out var theirs) || mine != theirs)];
    }

    /// <summary>
    /// What differs between this recorded run and the one <paramref name="other"/> asks for, field by field (e.g.
    /// <c>steps 100000 recorded, 50 asked</c>),
    /// for the message that refuses to mix them in one directory.
    /// </summary>
    public string DifferencesFrom(AdaptationManifest other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var differences = new List<string>();
        if (Method != other.Method) differences.Add($"method {Method} recorded, {other.Method} asked");
        if (!Tasks.SequenceEqual(other.Tasks, StringComparer.Ordinal)) differences.Add($"tasks [{string.Join(", ", Tasks)}] recorded, [{string.Join(", ", other.Tasks)}] asked");
        if (PoolIdentity != other.PoolIdentity) differences.Add($"pool {PoolIdentity} recorded, {other.PoolIdentity} asked");
        foreach (string key in Settings.Keys.Union(other.Settings.Keys).Order(StringComparer.Ordinal))
        {
            string mine = Settings.TryGetValue(key, out var a) ? a : "(unset)", theirs = other.Settings.TryGetValue(key, out var b) ? b : "(unset)";
            if (mine != theirs) differences.Add($"{key} {mine} recorded, {theirs} asked");
        }
        if (ChangedInputs(other.Inputs) is { Count: > 0 } changed) differences.Add($"other files ({string.Join(", ", changed)})");
        return differences.Count > 0 ? string.Join("; ", differences) : Describe();
    }

    /// <summary>One line naming the run's identity, for messages.</summary>
    public string Describe() =>
        $"{Method} on [{string.Join(", ", Tasks)}] (pool {PoolIdentity}) with {string.Join(", ", Settings.Select(kv => $"{kv.Key}={kv.Value}"))}";

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The manifest as indented snake_case JSON (what <see cref="Write"/> stores).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>True when <paramref name="directory"/> holds an <see cref="FileName"/>.</summary>
    public static bool Exists(string directory) => Directory.Exists(directory) && File.Exists(Path.Combine(directory, FileName));

    /// <exception cref="FileNotFoundException">No manifest in the directory.</exception>
    /// <exception cref="InvalidDataException">The manifest is not valid.</exception>
    public static AdaptationManifest Read(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"No {FileName} in {directory}: not the output of `mlmerge adapt`.", path);
        }

        try
        {
            var manifest = JsonSerializer.Deserialize<AdaptationManifest>(File.ReadAllText(path), Options)
                ?? throw new InvalidDataException($"{path}: empty manifest.");
            return manifest;
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: not a valid adaptation manifest: {e.Message}", e);
        }
    }

    /// <summary>Writes <c>adaptation.json</c> atomically.</summary>
    public void Write(string directory)
    {
        string path = Path.Combine(directory, FileName);
        string temp = path + ".partial";
        File.WriteAllText(temp, ToJson() + "\n");
        File.Move(temp, path, overwrite: true);
    }
}
