using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Onnx;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>The ML.NET transforms a fitted <c>MergeExperts</c> consists of: ML.NET's own, so the saved zip loads without this library.</summary>
internal static class ScoringChain
{
    /// <summary>Bits of the hash that carries the ONNX label vector to a scalar text column (collisions are checked).</summary>
    private const int LabelHashBits = 30;

    /// <summary>
    /// ApplyOnnxModel per exported model, then per task: the scores [1, classes] copied to a plain vector (an identity
    /// Expression, the one stock transform that drops the leading dimension ML.NET gives ONNX outputs), the label
    /// vector of one string hashed to a scalar key (Hash, combine) and mapped back to the class name (MapValue), and the
    /// ONNX columns dropped. Every piece is an ML.NET transform, so the chain saves and loads without this assembly.
    /// </summary>
    public static IEstimator<ITransformer> Build(TransformsCatalog catalog, IReadOnlyList<(string Path, IReadOnlyList<AdaptedTask> Tasks, long Bytes)> parts,
        IReadOnlyList<MergeExpertsTaskOutput> outputs, string inputColumn, ScoringSessions sessions)
    {
        IEstimator<ITransformer>? chain = null;
        IEstimator<ITransformer> Append(IEstimator<ITransformer> next) => chain = chain is null ? next : chain.Append(next);

        foreach (var (path, tasks, _) in parts)
        {
            var onnxOutputs = tasks.SelectMany(t => new[] { t.ScoresOutput, t.LabelOutput }).ToArray();
            Append(catalog.ApplyOnnxModel(new OnnxOptions
            {
                ModelFile = path,
                InputColumns = [inputColumn],
                OutputColumns = onnxOutputs,
                GpuDeviceId = sessions.GpuDeviceId,
                FallbackToCpu = sessions.FallbackToCpu,
                IntraOpNumThreads = sessions.IntraOpThreads,
                InterOpNumThreads = sessions.InterOpThreads,
            }));
        }

        var temporary = new List<string>();
        foreach (AdaptedTask task in parts.SelectMany(p => p.Tasks))
        {
            MergeExpertsTaskOutput output = outputs.Single(o => o.Task == task.Task);
            Append(catalog.Expression(output.ScoreColumnName, "x => x", task.ScoresOutput));
            var (hashing, keys) = LabelHash(catalog, task);
            Append(hashing);
            Append(catalog.Conversion.MapValue(output.PredictedLabelColumnName,
                keys.Select((key, i) => new KeyValuePair<uint, string>(key, task.ClassNames[i])), task.LabelOutput));
            temporary.Add(task.ScoresOutput);
            temporary.Add(task.LabelOutput);
        }

        return Append(catalog.DropColumns([.. temporary]));
    }

    /// <summary>A hashing estimator for the label column whose keys are distinct over the task's class names, and those keys.</summary>
    private static (HashingEstimator Estimator, uint[] Keys) LabelHash(TransformsCatalog catalog, AdaptedTask task)
    {
        var names = new MLContext(seed: 0);
        var schema = SchemaDefinition.Create(typeof(ClassNameRow));
        schema[0].ColumnName = task.LabelOutput;
        schema[0].ColumnType = new VectorDataViewType(TextDataViewType.Instance, 1);
        IDataView classes = names.Data.LoadFromEnumerable(task.ClassNames.Select(n => new ClassNameRow { Name = [n] }), schema);
        for (uint seed = 314489979; seed < 314489979 + 64; seed++)
        {
            var estimator = catalog.Conversion.Hash(new HashingEstimator.ColumnOptions(task.LabelOutput, task.LabelOutput, LabelHashBits, seed, combine: true));
            uint[] keys = estimator.Fit(classes).Transform(classes).GetColumn<uint>(task.LabelOutput).ToArray();
            if (keys.Distinct().Count() == keys.Length)
            {
                return (estimator, keys);
            }
        }

        throw new InvalidOperationException($"MergeExperts: no label hash separates the {task.ClassNames.Count} class names of task '{task.Task}'.");
    }

    private sealed class ClassNameRow
    {
        public string[] Name { get; set; } = [];
    }
}

/// <summary>How ONNX Runtime runs the scoring sessions: device, fallback and thread counts (null: ONNX Runtime's defaults).</summary>
internal sealed record ScoringSessions(int? GpuDeviceId, bool FallbackToCpu, int? IntraOpThreads, int? InterOpThreads);
