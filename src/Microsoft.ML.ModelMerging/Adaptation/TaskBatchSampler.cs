using Microsoft.ML.ModelMerging.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// The images of one task drawn at each step: the task's images are visited pass after pass, each pass in its own
/// permutation seeded by (seed, task, pass), and step s takes positions [s·B, (s+1)·B) of that endless sequence. The
/// batch of a step depends only on (seed, task, step), so a resumed run draws exactly what an uninterrupted one would.
/// A batch never holds more images than the task has: a larger one would only repeat them (and a batch of 100,000 on
/// five images would fill the memory).
/// </summary>
internal sealed class TaskBatchSampler(long imageCount, int batchSize, long seed, int task)
{
    private readonly int _batch = (int)Math.Min(batchSize, imageCount);

    private long _cachedPass = -1;
    private long[] _cachedPermutation = [];

    public long[] Indices(int step)
    {
        var indices = new long[_batch];
        long position = (long)step * _batch;
        for (int filled = 0; filled < _batch;)
        {
            long pass = position / imageCount;
            long offset = position % imageCount;
            long[] permutation = Permutation(pass);
            int take = (int)Math.Min(_batch - filled, imageCount - offset);
            Array.Copy(permutation, offset, indices, filled, take);
            filled += take;
            position += take;
        }

        return indices;
    }

    private long[] Permutation(long pass)
    {
        if (pass != _cachedPass)
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(StableSeed.Derive(seed, task, $"tta.pass.{pass}"));
            _cachedPermutation = randperm(imageCount, generator: generator).data<long>().ToArray();
            _cachedPass = pass;
        }

        return _cachedPermutation;
    }
}
