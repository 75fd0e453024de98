using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.Transforms;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// Merges an expert set when fitted, exports the merged model to ONNX and returns a <see cref="MergeExpertsTransformer"/>
/// that scores with ML.NET's own <c>OnnxTransformer</c> (see <see cref="MergeExpertsCatalog.MergeExperts(TransformsCatalog, Pools.ExpertPool, MergeExpertsOptions)"/>).
/// <para>
/// Output columns, per task: the score vector (<see cref="MergeExpertsOptions.ScoreColumnName"/>, a vector of
/// <see cref="float"/> of the class count) and the predicted class name (<see cref="MergeExpertsOptions.PredictedLabelColumnName"/>,
/// text), suffixed <c>_&lt;task&gt;</c> unless a single <see cref="MergeExpertsOptions.Task"/> was chosen.
/// </para>
/// </summary>
public sealed class MergeExpertsEstimator : IEstimator<MergeExpertsTransformer>
{
    private readonly TransformsCatalog _catalog;
    private readonly ExpertPool _experts;
    private readonly string? _modelPath;
    private readonly string? _taskColumn;
    private readonly OnnxScoreKind _scores;
    private readonly OnnxWeightPrecision _precision;
    private readonly int? _gpuDeviceId;
    private readonly bool _fallbackToCpu;
    private readonly int? _intraOpThreads;
    private readonly int? _interOpThreads;
    private readonly IProgress<AlgorithmProgress>? _progress;
    private readonly CancellationToken _cancellation;

    internal MergeExpertsEstimator(TransformsCatalog catalog, ExpertPool experts, MergeExpertsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _catalog = catalog;
        _experts = experts;
        ArgumentException.ThrowIfNullOrWhiteSpace(options.InputColumnName, nameof(options.InputColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(options.ScoreColumnName, nameof(options.ScoreColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(options.PredictedLabelColumnName, nameof(options.PredictedLabelColumnName));
        if (options.Task is { } chosen && !experts.TaskNames.Contains(chosen, StringComparer.Ordinal))
        {
            throw new ArgumentException($"MergeExperts: task '{chosen}' is not in the expert set ({string.Join(", ", experts.TaskNames)}).", nameof(options));
        }

        CheckScoringOptions(options);
        (Algorithm, Parameters) = options.CreateAlgorithm();
        // Checked here rather than after Fit has read every image.
        Parameters.Resolve(Algorithm.Name, Algorithm.Parameters);
        if (NeedsImages && options.TaskColumnName is null)
        {
            throw new ArgumentException(
                $"MergeExperts: {Algorithm.Name} learns from each task's own unlabeled images, so it must know every row's task: " +
                $"set TaskColumnName to a text column holding one of {string.Join(", ", experts.TaskNames)}.", nameof(options));
        }

        if (Algorithm.Needs.HasFlag(AlgorithmNeeds.PretrainedBase) && !experts.HasPretrained)
        {
            throw new ArgumentException($"MergeExperts: {Algorithm.Name} forms task vectors against a pre-trained base, and the pool at {experts.Directory} has none.", nameof(options));
        }

        // What the algorithm checks beyond its declared parameters (e.g. TACT: its base method's needs and parameters).
        try
        {
            Algorithm.Check(experts, Parameters);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"MergeExperts: {e.Message}", nameof(options), e);
        }

        InputColumnName = options.InputColumnName;
        InputRange = options.InputRange;
        _taskColumn = options.TaskColumnName;
        _scores = options.Scores;
        _precision = options.WeightPrecision;
        _modelPath = options.ModelPath;
        // No CUDA provider in this ONNX Runtime (the CPU package): the fallback the user asked for, decided here, where
        // ML.NET's own fallback would fail on the missing entry point.
        _gpuDeviceId = options.GpuDeviceId is not null && !CudaAvailable() ? null : options.GpuDeviceId;
        _fallbackToCpu = options.FallbackToCpu;
        _intraOpThreads = options.OnnxIntraOpThreads;
        _interOpThreads = options.OnnxInterOpThreads;
        _progress = options.Progress;
        _cancellation = options.Cancellation;

        IReadOnlyList<string> tasks = options.Task is { } task ? [task] : experts.TaskNames;
        Outputs = tasks.Select(t => new MergeExpertsTaskOutput(
            t,
            options.Task is null ? $"{options.ScoreColumnName}_{t}" : options.ScoreColumnName,
            options.Task is null ? $"{options.PredictedLabelColumnName}_{t}" : options.PredictedLabelColumnName,
            experts.Manifest.Task(t).ClassNames)).ToArray();

        var columns = Outputs.SelectMany(o => new[] { o.ScoreColumnName, o.PredictedLabelColumnName }).ToArray();
        if (columns.GroupBy(c => c, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            throw new ArgumentException($"MergeExperts: output column '{twice.Key}' would be written twice; use distinct score and label column names.", nameof(options));
        }

        var internalNames = InternalColumns(tasks);
        if (columns.Concat([InputColumnName]).FirstOrDefault(internalNames.Contains) is { } clash)
        {
            throw new ArgumentException($"MergeExperts: column name '{clash}' is used internally by the merged model ({string.Join(", ", internalNames)}); choose another.", nameof(options));
        }
    }

    /// <summary>
    /// Refuses, before any work, scoring settings that would only fail after the merge: values outside their enums, a
    /// model path that is blank or a directory, a GPU the ONNX Runtime in use cannot reach without a fallback, thread counts
    /// below 1.
    /// </summary>
    private static void CheckScoringOptions(MergeExpertsOptions options)
    {
        static void Defined<T>(T value, string name) where T : struct, Enum
        {
            if (!Enum.IsDefined(value))
                throw new ArgumentOutOfRangeException(name, value, $"MergeExperts: {name} is {value}; use one of {string.Join(", ", Enum.GetNames<T>())}.");
        }

        Defined(options.InputRange, nameof(options.InputRange));
        Defined(options.Scores, nameof(options.Scores));
        Defined(options.WeightPrecision, nameof(options.WeightPrecision));
        if (options.ModelPath is { } path)
        {
            if (string.IsNullOrWhiteSpace(path))
                throw new ArgumentException("MergeExperts: ModelPath is blank; give a file path for the ONNX model, or leave it null for a temporary file.", nameof(options.ModelPath));
            if (Directory.Exists(path))
                throw new ArgumentException($"MergeExperts: ModelPath {path} is a directory; give a file path for the ONNX model (e.g. {Path.Combine(path, "merged.onnx")}).", nameof(options.ModelPath));
        }

        if (options.GpuDeviceId is int device)
        {
            if (device < 0) throw new ArgumentOutOfRangeException(nameof(options.GpuDeviceId), device, "MergeExperts: GpuDeviceId is a CUDA device number, 0 or more.");
            if (!options.FallbackToCpu && !CudaAvailable())
                throw new ArgumentException($"MergeExperts: GpuDeviceId {device} needs ONNX Runtime's CUDA execution provider, which this ONNX Runtime does not have " +
                    $"(its providers: {string.Join(", ", AvailableProviders())}); build with the GPU package (docs/packaging.md) or set FallbackToCpu.", nameof(options.GpuDeviceId));
        }

        foreach (var (threads, name) in new[] { (options.OnnxIntraOpThreads, nameof(options.OnnxIntraOpThreads)), (options.OnnxInterOpThreads, nameof(options.OnnxInterOpThreads)) })
            if (threads is < 1)
                throw new ArgumentOutOfRangeException(name, threads, $"MergeExperts: {name} must be 1 or more (null: ONNX Runtime's default).");
    }

    private static IReadOnlyList<string> AvailableProviders() => Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders();

    private static bool CudaAvailable() => AvailableProviders().Contains("CUDAExecutionProvider", StringComparer.Ordinal);

    /// <summary>The merge algorithm <c>Fit</c> runs.</summary>
    public IMergeAlgorithm Algorithm { get; }

    /// <summary>The parameters it runs with (absent ones take their defaults).</summary>
    public MergeParameters Parameters { get; }

    /// <summary>True when the algorithm adapts on the unlabeled images of the data given to <c>Fit</c>.</summary>
    private bool NeedsImages => Algorithm.Needs.HasFlag(AlgorithmNeeds.UnlabeledImages);

    /// <summary>The column holding each row's pixels.</summary>
    public string InputColumnName { get; }

    /// <summary>The range of the input pixels: 0 to 255, or 0 to 1.</summary>
    public PixelRange InputRange { get; }

    /// <summary>The columns the fitted transformer adds, per task.</summary>
    public IReadOnlyList<MergeExpertsTaskOutput> Outputs { get; }

    /// <summary>
    /// The output schema shape, checked before any work: the input column must exist and be a known-size vector of
    /// <see cref="float"/>. Its size is not part of a <see cref="SchemaShape"/>; <see cref="GetOutputSchema(DataViewSchema)"/>
    /// and <see cref="Fit"/> check it.
    /// </summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (Find(inputSchema, InputColumnName) is not { } column)
        {
            throw MissingInput();
        }

        if (column.Kind != SchemaShape.Column.VectorKind.Vector || column.IsKey || column.ItemType != NumberDataViewType.Single)
        {
            string kind = column.Kind switch
            {
                SchemaShape.Column.VectorKind.Scalar => "a scalar",
                SchemaShape.Column.VectorKind.VariableVector => "a vector of unknown size",
                _ => "a vector",
            };
            throw WrongInputType($"{kind} of {column.ItemType}{(column.IsKey ? " keys" : "")}");
        }

        if (_taskColumn is not null && NeedsImages)
        {
            if (Find(inputSchema, _taskColumn) is not { } taskColumn)
            {
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"MergeExperts: task column '{_taskColumn}' not found.");
            }

            if (taskColumn.Kind != SchemaShape.Column.VectorKind.Scalar || taskColumn.ItemType != TextDataViewType.Instance)
            {
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"MergeExperts: task column '{_taskColumn}' must be text (a task name per row).");
            }
        }

        var result = inputSchema.Where(c => !Outputs.Any(o => o.ScoreColumnName == c.Name || o.PredictedLabelColumnName == c.Name)).ToList();
        result.AddRange(SchemaShapeColumns.Of(_catalog, OutputColumnsSchema()));
        return new SchemaShape(result);
    }

    /// <summary>
    /// The schema the fitted transformer produces for <paramref name="inputSchema"/> (its visible columns), with every check
    /// <see cref="Fit"/> makes on the input, including the input column's size.
    /// </summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckInput(inputSchema);
        CheckTaskColumn(inputSchema);
        var builder = new DataViewSchema.Builder();
        var replaced = new HashSet<string>(Outputs.SelectMany(o => new[] { o.ScoreColumnName, o.PredictedLabelColumnName }), StringComparer.Ordinal);
        foreach (DataViewSchema.Column column in inputSchema.Where(c => !c.IsHidden && !replaced.Contains(c.Name)))
        {
            builder.AddColumn(column.Name, column.Type, column.Annotations);
        }

        builder.AddColumns(OutputColumnsSchema());
        return builder.ToSchema();
    }

    /// <summary>
    /// Checks the input, merges (reading the unlabeled images first when the strategy needs them), writes the ONNX model
    /// and composes ML.NET's <c>ApplyOnnxModel</c> with the transforms that name the outputs.
    /// </summary>
    public MergeExpertsTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        PixelInputLayout layout = CheckInput(input.Schema);
        CheckTaskColumn(input.Schema);
        PixelInputChecks.CheckRange(input, InputColumnName, InputRange);

        var written = new List<string>();
        ITransformer? chain = null;
        try
        {
            var parts = new List<(string Path, IReadOnlyList<AdaptedTask> Tasks, long Bytes)>();
            using (UnlabeledImages? images = NeedsImages ? UnlabeledImageReader.Read(input, InputColumnName, _taskColumn, layout, InputRange, _experts.TaskNames, Algorithm.Name) : null)
            {
                var served = Outputs.Select(o => o.Task).ToArray();
                using var log = new MergeExpertsLog(_catalog, _progress);
                log.Info($"{Algorithm.Name} on {_experts.TaskNames.Count} experts from {_experts.Directory}");
                var context = new AlgorithmContext { Tasks = served, ExportOptions = ExportOptions(), Images = images, Progress = log, Cancellation = _cancellation };
                using MultiTaskModel merged = Algorithm.Run(_experts, Parameters, context);
                _cancellation.ThrowIfCancellationRequested();
                if (!merged.Tasks.Order(StringComparer.Ordinal).SequenceEqual(served.Order(StringComparer.Ordinal), StringComparer.Ordinal))
                {
                    throw new InvalidOperationException(
                        $"Merge algorithm '{Algorithm.Name}' returned models for tasks [{string.Join(", ", merged.Tasks)}] instead of [{string.Join(", ", served)}].");
                }

                foreach (MultiTaskModelPart part in merged.Parts)
                {
                    string path = PathFor(merged, part);
                    OnnxGraphBuilder graph = part.Exporter.BuildGraph();
                    var (model, tasks) = MlNetOnnxAdapter.Adapt(graph, InputColumnName, layout, InputRange);
                    written.Add(path);
                    long bytes = MlNetOnnxAdapter.Save(model, path);
                    parts.Add((path, tasks, bytes));
                }
            }

            chain = ScoringChain.Build(_catalog, parts, Outputs, InputColumnName, new ScoringSessions(_gpuDeviceId, _fallbackToCpu, _intraOpThreads, _interOpThreads)).Fit(input);
            var outputs = Outputs;
            return new MergeExpertsTransformer(chain, InputColumnName, layout, InputRange, outputs,
                parts.Select(p => p.Path).ToArray(), ownsModelFiles: _modelPath is null);
        }
        catch
        {
            (chain as IDisposable)?.Dispose();
            if (_modelPath is null)
            {
                foreach (string path in written)
                {
                    File.Delete(path);
                }
            }

            throw;
        }
    }

    /// <summary>Checks the input column against the model and returns how its values map to pixels.</summary>
    internal PixelInputLayout CheckInput(DataViewSchema schema) =>
        CheckInput(schema, InputColumnName, _experts.Config);

    internal static PixelInputLayout CheckInput(DataViewSchema schema, string inputColumn, VisionTransformerConfig config)
    {
        DataViewSchema.Column? column = schema.GetColumnOrNull(inputColumn);
        if (column is null)
        {
            throw MissingInput(inputColumn, config);
        }

        if (column.Value.Type is not VectorDataViewType { ItemType: NumberDataViewType item } vector || item != NumberDataViewType.Single || vector.Size == 0)
        {
            throw WrongInputType(inputColumn, config, column.Value.Type.ToString() ?? "?");
        }

        // ExtractPixels says its layout in the dimensions: [C, H, W] planar, [H, W, C] with interleavePixelColors. The
        // value count is the same, so an interleaved column would be read as planar and scored as noise.
        if (vector.Dimensions is [var height, var width, var channels] && channels is 1 or 3 or 4 && height == width && height != channels)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"MergeExperts: input column '{inputColumn}' holds interleaved pixels ({height}×{width}×{channels}, channel last); the model reads them channel by " +
                "channel: use ExtractPixels without interleavePixelColors.");

        return PixelInputLayout.ForInputValues(config, vector.Size) ?? throw new ArgumentOutOfRangeException(nameof(schema),
            $"MergeExperts: input column '{inputColumn}' holds {vector.Size} values per row; the merged model takes {PixelInputLayout.Describe(config)}. " +
            $"Resize the images to {config.ImageSize}×{config.ImageSize} before ExtractPixels.");
    }

    private static SchemaShape.Column? Find(SchemaShape shape, string name)
    {
        foreach (SchemaShape.Column column in shape)
        {
            if (column.Name == name)
            {
                return column;
            }
        }

        return null;
    }

    private void CheckTaskColumn(DataViewSchema schema)
    {
        if (_taskColumn is null || !NeedsImages)
        {
            return;
        }

        DataViewSchema.Column? column = schema.GetColumnOrNull(_taskColumn);
        if (column is null)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"MergeExperts: task column '{_taskColumn}' not found.");
        }

        if (column.Value.Type != TextDataViewType.Instance)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"MergeExperts: task column '{_taskColumn}' is {column.Value.Type}; it must be text (a task name per row).");
        }
    }

    private Exception MissingInput() => MissingInput(InputColumnName, _experts.Config);

    private Exception WrongInputType(string actual) => WrongInputType(InputColumnName, _experts.Config, actual);

    private static ArgumentOutOfRangeException MissingInput(string inputColumn, VisionTransformerConfig config) =>
        new("inputSchema",
            $"MergeExperts: input column '{inputColumn}' not found. It must hold each image's pixels: {PixelInputLayout.Describe(config)}, " +
            $"e.g. ResizeImages(\"image\", {config.ImageSize}, {config.ImageSize}) then ExtractPixels(\"{inputColumn}\", \"image\"); " +
            "or set MergeExpertsOptions.InputColumnName.");

    private static ArgumentOutOfRangeException WrongInputType(string inputColumn, VisionTransformerConfig config, string actual) =>
        new("inputSchema",
            $"MergeExperts: input column '{inputColumn}' is {actual}; expected a known-size vector of Single holding {PixelInputLayout.Describe(config)} " +
            "(ExtractPixels with its default outputAsFloatArray: true).");

    private static HashSet<string> InternalColumns(IEnumerable<string> tasks) =>
        new(tasks.SelectMany(t => new[] { OnnxTaskHead.ScoresOutputName(t), MlNetOnnxAdapter.LabelOutputName(t) }), StringComparer.Ordinal);

    private DataViewSchema OutputColumnsSchema()
    {
        var builder = new DataViewSchema.Builder();
        foreach (MergeExpertsTaskOutput output in Outputs)
        {
            builder.AddColumn(output.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, output.ClassNames.Count));
            builder.AddColumn(output.PredictedLabelColumnName, TextDataViewType.Instance);
        }

        return builder.ToSchema();
    }

    private VitOnnxExportOptions ExportOptions() => new()
    {
        WeightPrecision = _precision,
        Scores = _scores,
        IncludeFeatures = false,
        Description = $"Merged by Microsoft.ML.ModelMerging ({Algorithm.Name}) for ML.NET's OnnxTransformer.",
        Metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [StreamingMergeDriver.MethodMetadataKey] = Algorithm.Name,
            [StreamingMergeDriver.ParametersMetadataKey] = JsonSerializer.Serialize(new SortedDictionary<string, string>(
                Parameters.Values.ToDictionary(p => p.Key.ToLowerInvariant(), p => p.Value), StringComparer.Ordinal)),
        },
    };

    /// <summary>The given model path (one file per part, see <see cref="MultiTaskModel.OnnxPathFor"/>), or temporary files.</summary>
    private string PathFor(MultiTaskModel model, MultiTaskModelPart part) => _modelPath is null
        ? Path.Combine(Path.GetTempPath(), Path.GetFileName(model.OnnxPathFor($"mlmerge-{Guid.NewGuid():N}.onnx", part)))
        : model.OnnxPathFor(Path.GetFullPath(_modelPath), part);
}
