using System.Globalization;
using Microsoft.ML.ModelMerging.Training;
using Microsoft.ML.ModelMerging.Zoo;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// A diagnostic for entropy-minimising methods: a zoo's prototype heads have the logit scale that calibrates the
/// pre-trained backbone, so an expert behind its own head can stay uncertain (house-numbers: 1.5 nats at 80% accuracy).
/// This writes each task's head again with the scale that calibrates the task's expert instead (least validation
/// cross-entropy, <see cref="ExpertTrainer.CalibratedLogitScale"/>), into a copy of the zoo at OUT (its pools of adapters
/// left out). Accuracy is unchanged (a scale does not move an argmax); only the entropies that test-time adaptation
/// minimises change.
/// </summary>
internal static class HeadRecalibration
{
    public static int Run(string zoo, string output)
    {
        set_num_threads(1);
        var inv = CultureInfo.InvariantCulture;
        using var pool = ExpertPool.Load(zoo);
        string? linear = pool.TaskNames.FirstOrDefault(t => pool.Head(t).LogitScale is null);
        if (linear is not null)
            throw new InvalidOperationException($"{linear}: a linear head has no logit scale to calibrate; only prototype (CLIP-style) heads do.");
        CopyPool(zoo, output);
        foreach (var task in pool.Tasks)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var expert = pool.Expert(task.Name);
            var head = pool.Head(task.Name);
            var validation = pool.LoadData(task.Name).Validation;
            Tensor features = ClassifierEvaluation.MapBatches(x => VisionTransformer.Forward(pool.Config, expert, x), validation.ToTensor());
            using var unscaled = ClassificationHead.Clip(head.ClassNames, head.Weight.detach(), logitScale: 1);
            Tensor cosine = unscaled.Forward(features);
            var (bestScale, bestLoss) = ExpertTrainer.CalibratedLogitScale(cosine, validation.LabelsToTensor());
            double before = head.LogitScale!.item<float>();
            using var recalibrated = ClassificationHead.Clip(head.ClassNames, head.Weight.detach(), bestScale);
            string path = Path.Combine(output, task.Head);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            ModelCheckpoints.SaveHead(path, recalibrated, task: task.Name);
            Console.WriteLine(string.Create(inv, $"{task.Name}: logit scale {before:G4} → {bestScale:G4} (expert's validation cross-entropy {bestLoss:F3})"));
        }

        return 0;
    }

    /// <summary>Every file of the pool at <paramref name="source"/> except nested pools (folders with a pool.json of their own).</summary>
    private static void CopyPool(string source, string destination)
    {
        string root = Path.GetFullPath(source);
        foreach (string file in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(root, file);
            string? folder = Path.GetDirectoryName(relative);
            bool nested = false;
            for (; !string.IsNullOrEmpty(folder); folder = Path.GetDirectoryName(folder))
            {
                nested |= File.Exists(Path.Combine(root, folder, "pool.json"));
            }

            if (nested) continue;
            string target = Path.Combine(destination, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
    }
}
