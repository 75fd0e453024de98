using Microsoft.ML.Data;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// The fitted <see cref="MergeExpertsEstimator"/>: a chain of ML.NET's own transforms (<c>OnnxTransformer</c> on the merged
/// model, then column naming) to which <see cref="Transform"/>, <see cref="GetOutputSchema"/>, the row-to-row mapper used
/// by <c>PredictionEngine</c>, and saving are delegated. A saved pipeline therefore reloads in any <see cref="MLContext"/>,
/// without this assembly, as that chain. Immutable.
/// <para>
/// The transformer owns the ONNX files it reads when <see cref="MergeExpertsOptions.ModelPath"/> was not given (they are
/// deleted on <see cref="Dispose"/>, and those of a transformer never disposed when the process exits); ML.NET's
/// <c>OnnxTransformer</c> reads the file again when the model is saved, so save before disposing.
/// </para>
/// </summary>
public sealed class MergeExpertsTransformer : ITransformer, IDisposable
{
    private readonly ITransformer _chain;
    private readonly bool _ownsModelFiles;
    private bool _disposed;

    internal MergeExpertsTransformer(ITransformer chain, string inputColumnName, PixelInputLayout layout, PixelRange inputRange,
        IReadOnlyList<MergeExpertsTaskOutput> outputs, IReadOnlyList<string> modelPaths, bool ownsModelFiles)
    {
        _chain = chain;
        InputColumnName = inputColumnName;
        InputSize = layout.InputValues;
        InputRange = inputRange;
        Outputs = outputs;
        ModelPaths = modelPaths;
        _ownsModelFiles = ownsModelFiles;
        if (ownsModelFiles)
            foreach (string path in modelPaths) s_ownedFiles.TryAdd(path, 0);
    }

    /// <summary>Temporary ONNX files of transformers not yet disposed; ML.NET users rarely dispose transformers.</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> s_ownedFiles = CreateOwnedFiles();

    private static System.Collections.Concurrent.ConcurrentDictionary<string, byte> CreateOwnedFiles()
    {
        var files = new System.Collections.Concurrent.ConcurrentDictionary<string, byte>(StringComparer.Ordinal);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (string path in files.Keys)
            {
                try
                {
                    File.Delete(path);
                }
                catch (IOException)
                {
                    // Still open elsewhere: the temporary folder's own cleanup takes it.
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        };
        return files;
    }

    /// <summary>The ML.NET transforms this transformer runs and saves.</summary>
    public ITransformer Model => _chain;

    /// <summary>The column holding each row's pixels (a float vector of <see cref="InputSize"/> values).</summary>
    public string InputColumnName { get; }

    /// <summary>Values per row the input column must hold.</summary>
    public int InputSize { get; }

    /// <summary>The range of the input pixels: 0 to 255, or 0 to 1.</summary>
    public PixelRange InputRange { get; }

    /// <summary>The output columns, per task.</summary>
    public IReadOnlyList<MergeExpertsTaskOutput> Outputs { get; }

    /// <summary>The ONNX models scored (one, or one per task for methods whose weights depend on the task).</summary>
    public IReadOnlyList<string> ModelPaths { get; }

    /// <summary>Whether the underlying chain can map rows one at a time (as ML.NET's transforms it is made of can).</summary>
    public bool IsRowToRowMapper => _chain.IsRowToRowMapper;

    /// <summary>The input schema plus one score and one predicted-label column per task.</summary>
    /// <exception cref="ArgumentException">The input column is missing, or not a float vector of the size the model expects.</exception>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        CheckInput(inputSchema);
        return _chain.GetOutputSchema(inputSchema);
    }

    /// <summary>A row-to-row mapper over the underlying chain, for prediction engines.</summary>
    /// <exception cref="ArgumentException">The input column is missing, or not a float vector of the size the model expects.</exception>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        CheckInput(inputSchema);
        return _chain.GetRowToRowMapper(inputSchema);
    }

    /// <summary>Scores every row with the merged model (lazily, as ML.NET transforms do).</summary>
    /// <exception cref="ArgumentException">The input column is missing, or not a float vector of the size the model expects.</exception>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        CheckInput(input.Schema);
        return _chain.Transform(input);
    }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _chain.Save(ctx);
    }

    /// <summary>Releases the ONNX Runtime sessions and deletes the ONNX files this transformer owns.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        (_chain as IDisposable)?.Dispose();
        if (_ownsModelFiles)
        {
            foreach (string path in ModelPaths)
            {
                File.Delete(path);
                s_ownedFiles.TryRemove(path, out _);
            }
        }
    }

    private void CheckInput(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ObjectDisposedException.ThrowIf(_disposed, this);
        DataViewSchema.Column? column = inputSchema.GetColumnOrNull(InputColumnName);
        if (column is null)
        {
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"MergeExperts: input column '{InputColumnName}' not found; it must hold {InputSize} pixel values per row, as when the model was fitted.");
        }

        if (column.Value.Type is not VectorDataViewType { ItemType: NumberDataViewType item } vector || item != NumberDataViewType.Single || vector.Size != InputSize)
        {
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"MergeExperts: input column '{InputColumnName}' is {column.Value.Type}; the merged model was fitted on Vector<Single, {InputSize}>.");
        }
    }
}
