using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Training;

/// <summary>Batched inference helpers: features, logits, predictions and accuracy without autograd.</summary>
internal static class ClassifierEvaluation
{
    /// <summary>Applies <paramref name="map"/> to the images batch by batch and concatenates the results (no gradients).</summary>
    public static Tensor MapBatches(Func<Tensor, Tensor> map, Tensor images, int batchSize = 256)
    {
        using var noGrad = no_grad();
        var outputs = new List<Tensor>();
        try
        {
            for (long start = 0; start < images.shape[0]; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var output = map(images.narrow(0, start, Math.Min(batchSize, images.shape[0] - start)));
                outputs.Add(output.detach().MoveToOuterDisposeScope());
            }
            return cat(outputs, 0);
        }
        finally
        {
            foreach (var o in outputs) o.Dispose();
        }
    }

    /// <summary>Predicted class index per image.</summary>
    public static long[] Predict(Func<Tensor, Tensor> logits, Tensor images, int batchSize = 256)
    {
        using var all = MapBatches(x => logits(x).argmax(1), images, batchSize);
        return all.cpu().data<long>().ToArray();
    }

    /// <summary>Fraction of images whose arg-max logit is the label.</summary>
    public static double Accuracy(Func<Tensor, Tensor> logits, Tensor images, Tensor labels, int batchSize = 256)
    {
        var predicted = Predict(logits, images, batchSize);
        var truth = labels.cpu().to_type(ScalarType.Int64).data<long>().ToArray();
        if (predicted.Length != truth.Length) throw new ArgumentException($"{predicted.Length} predictions but {truth.Length} labels.");
        if (truth.Length == 0) throw new ArgumentException("Accuracy of an empty set is undefined.");
        int correct = 0;
        for (int i = 0; i < truth.Length; i++) if (predicted[i] == truth[i]) correct++;
        return (double)correct / truth.Length;
    }
}
