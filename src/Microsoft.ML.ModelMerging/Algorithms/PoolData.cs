using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.DataMerging;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>The data a data-dependent algorithm reads from a pool: unlabeled test images, or labeled training examples.</summary>
internal static class PoolData
{
    /// <summary>The tasks to adapt on with their images and heads: the context's images, or else the pool's test images.</summary>
    /// <returns>The tasks, and the images this call loaded (the caller disposes them; null when the context's were used).</returns>
    public static (List<AdaptationTask> Tasks, UnlabeledImages? Loaded) AdaptationTasks(ExpertPool pool, AlgorithmContext context, string algorithm)
    {
        UnlabeledImages? loaded = null;
        var images = context.Images;
        if (images is null)
        {
            var byTask = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                for (int t = 0; t < pool.Tasks.Count; t++)
                {
                    context.Cancellation.ThrowIfCancellationRequested();
                    string name = pool.Tasks[t].Name;
                    context.Progress?.Report(new AlgorithmProgress($"loading the test images of {name}", t, pool.Tasks.Count));
                    byTask[name] = pool.LoadData(name, context.Sources).Test.ToTensor();
                }

                images = loaded = new UnlabeledImages(cat(byTask.Values.ToArray(), 0), byTask);
            }
            catch
            {
                foreach (Tensor tensor in byTask.Values) tensor.Dispose();
                throw;
            }
        }

        if (images.ByTask.Count == 0)
        {
            loaded?.Dispose();
            throw new InvalidOperationException(
                $"{algorithm} learns from each task's own unlabeled images, so it must know every row's task: set MergeExpertsOptions.TaskColumnName " +
                $"to a text column holding one of {string.Join(", ", pool.TaskNames)}.");
        }

        // Only tasks with images contribute to the objective; every expert still takes part in the merge.
        var tasks = pool.TaskNames.Select((t, expert) => (t, expert)).Where(x => images.ByTask.ContainsKey(x.t))
            .Select(x => new AdaptationTask(x.t, images.ByTask[x.t], pool.Head(x.t), x.expert)).ToList();
        return (tasks, loaded);
    }

    /// <summary><paramref name="perTask"/> labeled training examples of every task with its expert and head. The caller disposes the tensors.</summary>
    public static List<ExpertExamples> LabeledExamples(ExpertPool pool, int perTask, int seed, AlgorithmContext context)
    {
        var examples = new List<ExpertExamples>();
        try
        {
            for (int t = 0; t < pool.Tasks.Count; t++)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                string name = pool.Tasks[t].Name;
                context.Progress?.Report(new AlgorithmProgress($"loading the training examples of {name}", t, pool.Tasks.Count));
                var train = ExpertExamples.Sample(pool.LoadData(name, context.Sources).Train, perTask, seed);
                examples.Add(new ExpertExamples(name, pool.Expert(name), train.ToTensor()) { Head = pool.Head(name), Labels = train.LabelsToTensor() });
            }

            return examples;
        }
        catch
        {
            Dispose(examples);
            throw;
        }
    }

    public static void Dispose(IEnumerable<ExpertExamples> examples)
    {
        foreach (var example in examples)
        {
            example.Images.Dispose();
            example.Labels?.Dispose();
        }
    }
}
