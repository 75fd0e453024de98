using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Algorithms;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>The images of the data given to <c>Fit</c>, for algorithms that adapt on them.</summary>
internal static class UnlabeledImageReader
{
    /// <summary>Reads the input column (and the task column) into images in [0, 1] for an algorithm that adapts at test time.</summary>
    public static UnlabeledImages Read(IDataView input, string inputColumn, string? taskColumnName, PixelInputLayout layout, PixelRange range,
        IReadOnlyList<string> taskNames, string algorithm)
    {
        DataViewSchema.Column pixelsColumn = input.Schema[inputColumn];
        DataViewSchema.Column? taskColumn = taskColumnName is null ? null : input.Schema[taskColumnName];
        var pixels = new List<float>();
        var tasks = new List<string>();
        var row = new float[layout.ModelValues];
        using (DataViewRowCursor cursor = input.GetRowCursor(taskColumn is null ? [pixelsColumn] : [pixelsColumn, taskColumn.Value]))
        {
            var getPixels = cursor.GetGetter<VBuffer<float>>(pixelsColumn);
            ValueGetter<ReadOnlyMemory<char>>? getTask = taskColumn is null ? null : cursor.GetGetter<ReadOnlyMemory<char>>(taskColumn.Value);
            VBuffer<float> values = default;
            ReadOnlyMemory<char> task = default;
            var dense = new float[layout.InputValues];
            while (true)
            {
                try
                {
                    if (!cursor.MoveNext()) break;
                    getPixels(ref values);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    throw InputReadFailure.Explain(input, inputColumn, Math.Max(cursor.Position, 0), e);
                }

                values.CopyTo(dense);
                // Every row is read here anyway: a non-finite pixel is named by its row, not left to surface as a diverged loss.
                if (Array.FindIndex(dense, v => !float.IsFinite(v)) is >= 0 and var at)
                    throw new InvalidDataException($"MergeExperts: input column '{inputColumn}' has value {dense[at]} in row {cursor.Position}; pixels must be finite.");
                layout.ToUnitPixels(dense, range, row);
                pixels.AddRange(row);
                if (getTask is not null)
                {
                    getTask(ref task);
                    string name = task.ToString();
                    if (!taskNames.Contains(name, StringComparer.Ordinal))
                    {
                        throw new InvalidDataException($"MergeExperts: row {cursor.Position} of task column '{taskColumnName}' names task '{name}', which is not in the expert set ({string.Join(", ", taskNames)}).");
                    }

                    tasks.Add(name);
                }
            }
        }

        long count = pixels.Count / layout.ModelValues;
        if (count == 0)
        {
            throw new InvalidOperationException($"MergeExperts: {algorithm} learns from unlabeled images, but the data given to Fit has no rows.");
        }

        long[] shape = [count, layout.Channels, layout.ImageSize, layout.ImageSize];
        Tensor all = tensor(pixels.ToArray(), shape);
        var byTask = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var group in tasks.Select((t, i) => (Task: t, Index: (long)i)).GroupBy(x => x.Task, StringComparer.Ordinal))
        {
            using Tensor indices = tensor(group.Select(x => x.Index).ToArray());
            byTask[group.Key] = all.index_select(0, indices);
        }

        return new UnlabeledImages(all, byTask);
    }
}
