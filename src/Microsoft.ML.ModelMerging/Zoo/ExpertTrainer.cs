using Microsoft.ML.ModelMerging.Pools;
using System.Diagnostics;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.LowRank;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Zoo;


/// <summary>
/// What making an expert produced: the fine-tuned backbone weights (for an adapter, the densified W0 + ΔW), the adapter
/// when one was trained, its frozen head, and accuracies before and after.
/// </summary>
public sealed class ExpertTrainingResult : IDisposable
{
    /// <summary>The fine-tuned backbone's tensors by name (for an adapter, W0 + ΔW); owned by the result.</summary>
    public required Dictionary<string, Tensor> Backbone { get; init; }
    /// <summary>The frozen head the expert was trained behind; owned by the result.</summary>
    public required ClassificationHead Head { get; init; }
    /// <summary>The head's accuracy on the pre-trained backbone (validation, test).</summary>
    public required SplitAccuracy LinearProbe { get; init; }
    /// <summary>The head's accuracy on the fine-tuned backbone (validation, test).</summary>
    public required SplitAccuracy Expert { get; init; }
    /// <summary>The LoRA or L-LoRA adapter (modes <c>lora</c>, <c>l-lora</c>); null for full fine-tuning.</summary>
    public LoraAdapter? Adapter { get; init; }
    /// <summary>How many numbers fine-tuning updated.</summary>
    public long TrainableParameters { get; init; }
    /// <summary>Wall-clock seconds of the fine-tuning phase alone.</summary>
    public double FineTuningSeconds { get; init; }

    /// <summary>Disposes the backbone, the head and the adapter.</summary>
    public void Dispose()
    {
        foreach (var t in Backbone.Values) t.Dispose();
        Head.Dispose();
        Adapter?.Dispose();
    }
}

/// <summary>
/// The expert recipe: a linear-probe head fitted on frozen pre-trained features of a few images per class, then full
/// fine-tuning of the backbone with that head frozen.
/// </summary>
public static class ExpertTrainer
{
    /// <summary>Names of the phases <see cref="Train"/> reports.</summary>
    public const string ProbePhase = "linear probe", FineTuningPhase = "fine-tuning", EvaluationPhase = "evaluation";

    /// <summary>Fits a linear head on the frozen pre-trained features of <paramref name="train"/>; the head is returned frozen.</summary>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="pretrained">The pre-trained backbone's tensors.</param>
    /// <param name="train">The images the head is fitted on.</param>
    /// <param name="options">The training settings (augmentation off: features are computed once).</param>
    /// <param name="seed">Seed of the head's initialisation and the shuffling.</param>
    /// <param name="progress">Receives a report per step; optional.</param>
    /// <param name="cancellation">Stops the training.</param>
    public static ClassificationHead TrainLinearProbe(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> pretrained,
        ImageDataset train, TrainingOptions options, long seed, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        using var images = train.ToTensor();
        using var labels = train.LabelsToTensor();
        using var features = ClassifierEvaluation.MapBatches(x => VisionTransformer.Forward(config, pretrained, x), images);
        var head = ClassificationHead.CreateLinear(train.ClassNames, config.FeatureDim, seed);
        ClassifierTrainer.Train(f => head.Forward(f), head.Parameters.ToList(), features, labels, options with { MaxShift = 0, Seed = seed }, progress, cancellation);
        head.SetRequiresGrad(false);
        return head;
    }

    /// <summary>
    /// A CLIP-style head made from the shots instead of trained on them: each class's embedding is the mean of its shots'
    /// normalised pre-trained features (a class prototype, as CLIP's zero-shot head is a class name's text embedding), and the
    /// logit scale is the one that makes the pre-trained backbone best calibrated on <paramref name="calibration"/> (least
    /// cross-entropy over a log grid). Unlike a linear probe trained to convergence on a few shots, whose weights grow until
    /// every image gets a confident answer, its logits are bounded by the scale, so a model that has not learned the task
    /// stays uncertain behind it — which is what lets test-time entropy minimisation tell a right expert from a wrong one.
    /// </summary>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="pretrained">The pre-trained backbone's tensors.</param>
    /// <param name="shots">The images the class prototypes are averaged from.</param>
    /// <param name="calibration">Labeled images the logit scale is chosen on (a validation split).</param>
    public static ClassificationHead PrototypeHead(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> pretrained,
        ImageDataset shots, ImageDataset calibration)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor features = nn.functional.normalize(ClassifierEvaluation.MapBatches(x => VisionTransformer.Forward(config, pretrained, x), shots.ToTensor()), dim: 1);
        Tensor labels = shots.LabelsToTensor();
        var prototypes = ScalarOperands.With(1.0, one => zeros(shots.ClassCount, features.shape[1]).index_add_(0, labels, features, one));
        using var head = ClassificationHead.Clip(shots.ClassNames, prototypes, 1.0);
        Tensor cosine = ClassifierEvaluation.MapBatches(x => head.Forward(VisionTransformer.Forward(config, pretrained, x)), calibration.ToTensor());
        var (bestScale, _) = CalibratedLogitScale(cosine, calibration.LabelsToTensor());
        var result = ClassificationHead.Clip(shots.ClassNames, prototypes, bestScale);
        result.SetRequiresGrad(false);
        return result;
    }

    /// <summary>
    /// The logit scale, on a log grid from 1 to 1000 (20 steps a decade, rounded to 4 decimals), under which
    /// <paramref name="cosine"/> similarities [N, classes] give the least cross-entropy on <paramref name="labels"/>, and that loss.
    /// </summary>
    internal static (double Scale, double Loss) CalibratedLogitScale(Tensor cosine, Tensor labels)
    {
        double bestScale = 1, bestLoss = double.PositiveInfinity;
        for (int step = 0; step <= 60; step++)
        {
            double scale = Math.Pow(10, step / 20.0);
            double loss = nn.functional.cross_entropy(cosine.Times(scale), labels).item<float>();
            if (loss < bestLoss) (bestScale, bestLoss) = (scale, loss);
        }

        return (Math.Round(bestScale, 4), bestLoss);
    }

    /// <summary>A seeded, stratified choice of <paramref name="shotsPerClass"/> training images per class (all of them when 0).</summary>
    public static ImageDataset Shots(ImageDataset train, int shotsPerClass, int seed)
    {
        if (shotsPerClass <= 0) return train;
        var counts = train.CountPerClass();
        int smallest = counts.Min();
        if (smallest < shotsPerClass)
            throw new ArgumentException($"{train.Name}: class '{train.ClassNames[Array.IndexOf(counts, smallest)]}' has {smallest} training images, fewer than the {shotsPerClass} shots asked for.");
        var pick = StratifiedSampler.Split(train.Labels.Span, train.ClassCount, new[] { shotsPerClass * train.ClassCount }, seed)[0];
        return train.Select(pick, train.Name + $"/{shotsPerClass}-shot");
    }

    /// <summary>The whole recipe: a linear probe on the pre-trained features, then fine-tuning behind it, measured before and after.</summary>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="pretrained">The pre-trained backbone's tensors.</param>
    /// <param name="task">The task's splits: the head and expert train on the training part, accuracies are measured on the others.</param>
    /// <param name="probeShots">Images per class the head is fitted on; 0 = the whole training split.</param>
    /// <param name="linearProbe">The probe's training settings.</param>
    /// <param name="fineTuning">The fine-tuning's training settings.</param>
    /// <param name="seed">Seed of every random choice.</param>
    /// <param name="progress">Receives a report per training step; optional.</param>
    /// <param name="cancellation">Stops the training.</param>
    /// <param name="lora">Null: full fine-tuning; else the LoRA or L-LoRA adapter trained instead (backbone frozen).</param>
    /// <param name="phases">Told when each phase starts: <see cref="ProbePhase"/>, <see cref="FineTuningPhase"/>, <see cref="EvaluationPhase"/>.</param>
    /// <param name="headKind">How the frozen head is made from the shots: a trained linear probe, or class prototypes.</param>
    public static ExpertTrainingResult Train(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> pretrained, TaskSplits task,
        int probeShots, TrainingOptions linearProbe, TrainingOptions fineTuning, long seed,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default, IProgress<string>? phases = null, LoraOptions? lora = null,
        ExpertHeadKind headKind = ExpertHeadKind.LinearProbe)
    {
        phases?.Report(ProbePhase);
        var shots = Shots(task.Train, probeShots, (int)seed);
        var head = headKind == ExpertHeadKind.Prototype
            ? PrototypeHead(config, pretrained, shots, task.Validation)
            : TrainLinearProbe(config, pretrained, shots, linearProbe, seed, progress, cancellation);
        try
        {
            phases?.Report(EvaluationPhase);
            var probe = Evaluate(config, pretrained, head, task);
            return FineTune(config, pretrained, task, head, probe, fineTuning, seed, lora, progress, cancellation, phases);
        }
        catch
        {
            head.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Fine-tunes an expert for <paramref name="task"/> behind a frozen <paramref name="head"/> (the result owns it, also on
    /// failure): every backbone weight when <paramref name="lora"/> is null, else only a LoRA or L-LoRA adapter (the
    /// backbone frozen). The result's backbone is the fine-tuned model (for an adapter, W0 + ΔW).
    /// </summary>
    /// <param name="config">The backbone's configuration.</param>
    /// <param name="pretrained">The pre-trained backbone's tensors (not changed).</param>
    /// <param name="task">The task's splits.</param>
    /// <param name="head">The frozen head; the result owns it.</param>
    /// <param name="probe">The head's accuracy on the pre-trained backbone, passed through to the result.</param>
    /// <param name="fineTuning">The training settings.</param>
    /// <param name="seed">Seed of the shuffling, the augmentation and (LoRA) the adapter's initialisation.</param>
    /// <param name="lora">Null: full fine-tuning; else the LoRA or L-LoRA adapter trained instead.</param>
    /// <param name="progress">Receives a report per training step; optional.</param>
    /// <param name="cancellation">Stops the training.</param>
    /// <param name="phases">Told when each phase starts.</param>
    public static ExpertTrainingResult FineTune(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> pretrained, TaskSplits task,
        ClassificationHead head, SplitAccuracy probe, TrainingOptions fineTuning, long seed, LoraOptions? lora,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default, IProgress<string>? phases = null)
    {
        LoraAdapter? adapter = null;
        Dictionary<string, Tensor>? weights = null;
        try
        {
            head.SetRequiresGrad(false);
            phases?.Report(FineTuningPhase);
            var clock = Stopwatch.StartNew();
            long trainable;
            using (var images = task.Train.ToTensor())
            using (var labels = task.Train.LabelsToTensor())
            {
                if (lora is null)
                {
                    using var model = VisionTransformer.FromState(config, pretrained);
                    var groups = ParameterGroups(model, fineTuning.NonMlpLearningRateScale);
                    trainable = groups.Sum(g => g.Parameters.Sum(p => p.numel()));
                    ClassifierTrainer.Train(x => head.Forward(model.Forward(x)), groups, images, labels,
                        fineTuning with { Seed = seed }, progress, cancellation);
                    weights = model.State().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone(), StringComparer.Ordinal);
                }
                else
                {
                    adapter = LoraAdapter.Initialize(config, lora);
                    var hooks = adapter.Hooks;
                    trainable = adapter.TrainableParameterCount;
                    ClassifierTrainer.Train(x => head.Forward(VisionTransformer.Forward(config, pretrained, x, hooks)), adapter.Trainable, images, labels,
                        fineTuning with { Seed = seed }, progress, cancellation);
                    weights = adapter.Densify(pretrained);
                }
            }
            double seconds = clock.Elapsed.TotalSeconds;
            phases?.Report(EvaluationPhase);
            return new ExpertTrainingResult
            {
                Backbone = weights, Head = head, LinearProbe = probe, Expert = Evaluate(config, weights, head, task),
                Adapter = adapter, TrainableParameters = trainable, FineTuningSeconds = seconds,
            };
        }
        catch
        {
            head.Dispose();
            adapter?.Dispose();
            if (weights is not null) foreach (var t in weights.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The MLPs' tensors at the scheduled rate and every other tensor at <paramref name="nonMlpScale"/> times it (null: one
    /// group; 0: the others are frozen and not trained at all).
    /// </summary>
    internal static IReadOnlyList<ParameterGroup> ParameterGroups(VisionTransformer model, double? nonMlpScale)
    {
        if (nonMlpScale is null or 1) return [new ParameterGroup(model.Parameters.ToList())];
        var mlp = new List<TorchSharp.Modules.Parameter>();
        var rest = new List<TorchSharp.Modules.Parameter>();
        foreach (var (name, parameter) in model.NamedParameters) (VisionTransformerNames.IsMlp(name) ? mlp : rest).Add(parameter);
        if (nonMlpScale == 0)
        {
            foreach (var p in rest) p.requires_grad = false;
            return [new ParameterGroup(mlp)];
        }
        return [new ParameterGroup(mlp), new ParameterGroup(rest, nonMlpScale.Value)];
    }

    /// <summary>Accuracy of <paramref name="head"/> on the backbone <paramref name="weights"/>, on the validation and test parts.</summary>
    public static SplitAccuracy Evaluate(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, ClassificationHead head, TaskSplits task) =>
        new(Accuracy(config, weights, head, task.Validation), Accuracy(config, weights, head, task.Test));

    /// <summary>Accuracy of <paramref name="head"/> on the backbone <paramref name="weights"/> over <paramref name="data"/>.</summary>
    public static double Accuracy(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> weights, ClassificationHead head, ImageDataset data)
    {
        using var images = data.ToTensor();
        using var labels = data.LabelsToTensor();
        return ClassifierEvaluation.Accuracy(x => head.Forward(VisionTransformer.Forward(config, weights, x)), images, labels);
    }
}
