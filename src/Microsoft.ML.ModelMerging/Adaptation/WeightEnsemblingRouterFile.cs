using Microsoft.ML.ModelMerging.Onnx;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// Trained WEMoE routers on disk, as <see cref="WeightEnsemblingMoE.SaveRouters"/> or a test-time adaptation checkpoint
/// writes them, and what is needed to rebuild the model they belong to: the options, the expert count, the config and,
/// when recorded, the tasks of the experts in order. <see cref="CreateModel"/> rebuilds the upscaled model from a zoo
/// (pre-trained model + experts) and loads the routers into it.
/// </summary>
/// <remarks>
/// The experts' order is part of the routers (output i of a router weighs expert i). Writers should record it:
/// <c>model.SaveRouters(path, WeightEnsemblingRouterFile.TaskMetadata(taskNames))</c>. Without it, the order is taken
/// from an adaptation checkpoint's run description, else from the caller, else the zoo's task order is assumed.
/// </remarks>
internal sealed class WeightEnsemblingRouterFile
{
    /// <summary>The file looked for first when a directory is given (e.g. the output directory of an adaptation run).</summary>
    public const string FileName = "routers.safetensors";

    /// <summary>Metadata key holding the experts' task names in order, as a JSON array.</summary>
    public const string TasksMetadataKey = "mlmerge.wemoe_tasks";

    /// <summary>Metadata prefix of test-time adaptation provenance (step, loss, run settings), carried into exported models.</summary>
    public const string AdaptationMetadataPrefix = "mlmerge.tta.";

    private WeightEnsemblingRouterFile(string path, WeightEnsemblingOptions options, int expertCount, VisionTransformerConfig? config,
        IReadOnlyList<string>? tasks, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        Options = options;
        ExpertCount = expertCount;
        Config = config;
        Tasks = tasks;
        Metadata = metadata;
    }

    /// <summary>The .safetensors file holding the routers.</summary>
    public string Path { get; }

    public WeightEnsemblingOptions Options { get; }

    public int ExpertCount { get; }

    /// <summary>The backbone config the routers were trained with, when recorded.</summary>
    public VisionTransformerConfig? Config { get; }

    /// <summary>The experts' task names in router-output order, when recorded (<see cref="TasksMetadataKey"/> or an adaptation checkpoint's run).</summary>
    public IReadOnlyList<string>? Tasks { get; }

    /// <summary>The file's metadata.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The metadata entry that records the experts' tasks, to pass to <see cref="WeightEnsemblingMoE.SaveRouters"/>.</summary>
    public static Dictionary<string, string> TaskMetadata(IEnumerable<string> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        return new Dictionary<string, string>(StringComparer.Ordinal) { [TasksMetadataKey] = JsonSerializer.Serialize(tasks.ToArray()) };
    }

    /// <summary>
    /// Opens a router file, or a directory holding <see cref="FileName"/> or exactly one .safetensors file with WEMoE
    /// options in its metadata (routers or an adaptation checkpoint).
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing at the path, or no router file in the directory.</exception>
    /// <exception cref="InvalidDataException">The file is not a WEMoE router file or its metadata is malformed.</exception>
    public static WeightEnsemblingRouterFile Open(string fileOrDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fileOrDirectory);
        string path = Resolve(fileOrDirectory);
        using var checkpoint = Checkpoint.Open(path);
        var metadata = checkpoint.Metadata;
        if (!metadata.TryGetValue(WeightEnsemblingOptions.MetadataKey, out string? optionsJson))
        {
            throw new InvalidDataException($"{path}: no '{WeightEnsemblingOptions.MetadataKey}' metadata; not a WEMoE router file.");
        }

        WeightEnsemblingOptions options;
        try
        {
            options = WeightEnsemblingOptions.FromJson(optionsJson);
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }

        if (!metadata.TryGetValue(WeightEnsemblingMoE.ExpertCountMetadataKey, out string? countText)
            || !int.TryParse(countText, NumberStyles.None, CultureInfo.InvariantCulture, out int expertCount) || expertCount <= 0)
        {
            throw new InvalidDataException($"{path}: metadata '{WeightEnsemblingMoE.ExpertCountMetadataKey}' is missing or not a positive count.");
        }

        VisionTransformerConfig? config = null;
        if (metadata.TryGetValue(VisionTransformerConfig.MetadataKey, out string? configJson))
        {
            try
            {
                config = VisionTransformerConfig.FromJson(configJson);
            }
            catch (Exception e) when (e is FormatException or ArgumentException or JsonException)
            {
                throw new InvalidDataException($"{path}: metadata '{VisionTransformerConfig.MetadataKey}' is invalid: {e.Message}", e);
            }
        }

        IReadOnlyList<string>? tasks = ReadTasks(path, metadata, expertCount);
        return new WeightEnsemblingRouterFile(path, options, expertCount, config, tasks,
            new Dictionary<string, string>(metadata, StringComparer.Ordinal));
    }

    /// <summary>
    /// The tasks of the experts in router order: the recorded ones (<paramref name="requested"/>, if given, must be the
    /// same list), else <paramref name="requested"/>, else all of <paramref name="available"/> (the zoo's tasks, in order).
    /// The count must be <see cref="ExpertCount"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The tasks cannot be determined or contradict the file.</exception>
    public IReadOnlyList<string> ExpertTasks(IReadOnlyList<string> available, IReadOnlyList<string>? requested = null)
    {
        ArgumentNullException.ThrowIfNull(available);
        if (Tasks is not null)
        {
            if (requested is { Count: > 0 } && !requested.SequenceEqual(Tasks, StringComparer.Ordinal))
            {
                throw new ArgumentException(
                    $"{Path}: the routers weigh the experts of tasks [{string.Join(", ", Tasks)}] in this order; the tasks asked for are [{string.Join(", ", requested)}].");
            }

            return Tasks;
        }

        if (requested is { Count: > 0 })
        {
            return requested.Count == ExpertCount
                ? requested
                : throw new ArgumentException($"{Path}: the routers have {ExpertCount} expert(s); {requested.Count} task(s) were given.");
        }

        return available.Count == ExpertCount
            ? available
            : throw new ArgumentException(
                $"{Path}: the routers have {ExpertCount} expert(s) and do not record their tasks; name the experts' tasks in order (the zoo has {available.Count}: {string.Join(", ", available)}).");
    }

    /// <summary>
    /// Rebuilds the upscaled model from the zoo's pre-trained model and the experts of <paramref name="experts"/> (in that
    /// set's task order, which must be the routers' order when recorded) and loads the routers into it.
    /// </summary>
    /// <exception cref="ArgumentException">The zoo does not match the routers (config, tasks or expert count).</exception>
    public WeightEnsemblingMoE CreateModel(ExpertPool experts)
    {
        ArgumentNullException.ThrowIfNull(experts);
        if (Config is not null && Config.ToJson() != experts.Config.ToJson())
        {
            throw new ArgumentException($"{Path}: the routers were trained for another model than the zoo holds ({string.Join("; ", Config.DifferencesFrom(experts.Config, "the zoo's"))}).");
        }

        IReadOnlyList<string> names = experts.TaskNames;
        if (!ExpertTasks(names, names).SequenceEqual(names, StringComparer.Ordinal))
        {
            throw new ArgumentException($"{Path}: the expert set's tasks [{string.Join(", ", names)}] are not the routers' experts.");
        }

        var model = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts, Options);
        try
        {
            model.LoadRouters(Path);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static string Resolve(string fileOrDirectory)
    {
        if (File.Exists(fileOrDirectory))
        {
            return fileOrDirectory;
        }

        if (!Directory.Exists(fileOrDirectory))
        {
            throw new FileNotFoundException($"No router file or directory at {fileOrDirectory}.", fileOrDirectory);
        }

        string preferred = System.IO.Path.Combine(fileOrDirectory, FileName);
        if (File.Exists(preferred))
        {
            return preferred;
        }

        var candidates = Directory.GetFiles(fileOrDirectory, "*.safetensors").Order(StringComparer.Ordinal).Where(HasOptions).ToList();
        return candidates.Count switch
        {
            1 => candidates[0],
            0 => throw new FileNotFoundException($"{fileOrDirectory}: no {FileName} and no .safetensors file with WEMoE routers.", fileOrDirectory),
            _ => throw new ArgumentException(
                $"{fileOrDirectory}: {candidates.Count} files with WEMoE routers ({string.Join(", ", candidates.Select(System.IO.Path.GetFileName))}); name the file to export."),
        };
    }

    private static bool HasOptions(string file)
    {
        try
        {
            using var checkpoint = Checkpoint.Open(file);
            return checkpoint.Metadata.ContainsKey(WeightEnsemblingOptions.MetadataKey);
        }
        catch (CheckpointFormatException)
        {
            return false;
        }
    }

    /// <summary>The recorded task list, else the task names of an adaptation checkpoint's run when they are one per expert.</summary>
    private static IReadOnlyList<string>? ReadTasks(string path, IReadOnlyDictionary<string, string> metadata, int expertCount)
    {
        if (metadata.TryGetValue(TasksMetadataKey, out string? json))
        {
            string[]? tasks;
            try
            {
                tasks = JsonSerializer.Deserialize<string[]>(json);
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}: metadata '{TasksMetadataKey}' is not a JSON array of task names: {e.Message}", e);
            }

            if (tasks is null || tasks.Length != expertCount || tasks.Any(string.IsNullOrWhiteSpace) || tasks.Distinct(StringComparer.Ordinal).Count() != tasks.Length)
            {
                throw new InvalidDataException($"{path}: metadata '{TasksMetadataKey}' must list {expertCount} distinct task names (got {json}).");
            }

            return tasks;
        }

        if (metadata.TryGetValue(AdaptationCheckpoint.RunMetadataKey, out string? run))
        {
            try
            {
                using var document = JsonDocument.Parse(run);
                if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("tasks", out JsonElement list)
                    && list.ValueKind == JsonValueKind.Array)
                {
                    string?[] names = [.. list.EnumerateArray().Select(t =>
                        t.ValueKind == JsonValueKind.Object && t.TryGetProperty("name", out JsonElement n) && n.ValueKind == JsonValueKind.String ? n.GetString() : null)];
                    if (names.Length == expertCount && names.All(n => !string.IsNullOrWhiteSpace(n)) && names.Distinct(StringComparer.Ordinal).Count() == names.Length)
                    {
                        return names!;
                    }
                }
            }
            catch (JsonException)
            {
                // Not a run description we understand: fall back to the caller's tasks.
            }
        }

        return null;
    }
}
