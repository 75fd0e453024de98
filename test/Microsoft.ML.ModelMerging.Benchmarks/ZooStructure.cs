using System.Globalization;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.Experiments;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Benchmarks;

/// <summary>
/// Does a zoo have the 8-task CLIP benchmark's structure (issue 13)? Four measurements against the issue's goals:
/// (a) a linear probe on the pre-trained features tells the task from the image (≥ 99%);
/// (b) the MLP-upscaled model with oracle routing (each task's images through its own expert's MLPs, everything else
///     task arithmetic at λ) keeps ≥ 98% of the experts' accuracy — WEMoE's ceiling;
/// (c) task arithmetic (λ chosen on validation) stays ≤ 85% normalised — interference is real;
/// (d) every expert is far above the pre-trained linear probe (the fine-tuning taught the task).
/// Beside them, without a goal in the issue: (a″) the probe on every block's mean token together and (a‴) on the raw
/// pixels, which bound (a) from both sides; (e) how much of its expert's gain one task vector keeps alone at λ: what
/// task arithmetic at that λ keeps of the expert before any interference; (b′) oracle routing with E-WEMoE's pruned MLP
/// task vectors.
/// </summary>
internal static class ZooStructure
{
    public static int Run(string zoo, double lambda, int perTask)
    {
        set_num_threads(1);
        var inv = CultureInfo.InvariantCulture;
        using var experts = ExpertPool.Load(zoo);
        var config = experts.Config;
        var names = experts.TaskNames;
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);

        // (a) Task identity from frozen pre-trained features: train on training images, score on test images. Probed on
        // the final features (what a head sees) and on each block's mean MLP-input token, which is exactly what a depth-1
        // WEMoE router reads (a linear map of the mean token), so a probe there bounds what routing can tell apart.
        int blocks = config.Layers;
        (Tensor Final, Tensor[] Blocks, Tensor Pixels) Features(ImageDataset data)
        {
            using var images = data.Select(Enumerable.Range(0, Math.Min(perTask, data.Count)).ToArray()).ToTensor();
            var pixels = images.flatten(1).detach().clone();
            var perBlock = Enumerable.Range(0, blocks).Select(_ => new List<Tensor>()).ToArray();
            var hooks = new ForwardHooks
            {
                SiteTransform = (site, block, x) =>
                {
                    if (site == ActivationSite.MlpInput) perBlock[block].Add(x.mean([1]).detach().MoveToOuterDisposeScope());
                    return x;
                },
            };
            var final = ClassifierEvaluation.MapBatches(x => VisionTransformer.Forward(config, experts.Pretrained, x, hooks), images);
            var stacked = perBlock.Select(list => { var all = cat(list, 0); foreach (var t in list) t.Dispose(); return all; }).ToArray();
            return (final, stacked, pixels);
        }

        var train = new List<(Tensor Final, Tensor[] Blocks, Tensor Pixels)>();
        var test = new List<(Tensor Final, Tensor[] Blocks, Tensor Pixels)>();
        foreach (string name in names)
        {
            var splits = experts.LoadData(name);
            train.Add(Features(splits.Train));
            test.Add(Features(splits.Test));
        }

        double Probe(Func<(Tensor Final, Tensor[] Blocks, Tensor Pixels), Tensor> pick)
        {
            // Standardised with the training features' mean and spread, as a logistic-regression probe on CLIP features is.
            using var rawTrain = cat(train.Select(pick).ToList(), 0);
            using var rawTest = cat(test.Select(pick).ToList(), 0);
            using var mean = rawTrain.mean([0], keepdim: true);
            using var spread = rawTrain.std([0], keepdim: true) + 1e-6;
            using var trainX = (rawTrain - mean) / spread;
            using var testX = (rawTest - mean) / spread;
            using var trainY = cat(train.Select((f, t) => full(pick(f).shape[0], t, ScalarType.Int64)).ToList(), 0);
            using var testY = cat(test.Select((f, t) => full(pick(f).shape[0], t, ScalarType.Int64)).ToList(), 0);
            using var taskHead = ClassificationHead.CreateLinear(names, (int)rawTrain.shape[1], seed: 0);
            ClassifierTrainer.Train(f => taskHead.Forward(f), taskHead.Parameters.ToList(), trainX, trainY,
                new TrainingOptions { Epochs = 300, BatchSize = 512, LearningRate = 1e-2, WeightDecay = 0, WarmupFraction = 0 });
            // Which tasks are taken for which: the confusions show where domains look alike to the backbone.
            var predicted = ClassifierEvaluation.Predict(f => taskHead.Forward(f), testX, 256);
            var truth = testY.data<long>().ToArray();
            var confusions = truth.Zip(predicted).Where(p => p.First != p.Second)
                .GroupBy(p => $"{names[(int)p.First]}→{names[(int)p.Second]}").OrderByDescending(g => g.Count()).Take(4)
                .Select(g => $"{g.Key} {g.Count()}");
            double accuracy = ClassifierEvaluation.Accuracy(f => taskHead.Forward(f), testX, testY);
            Console.Error.WriteLine(string.Create(inv, $"  task probe: {100 * accuracy:F1}%, most confused {string.Join(", ", confusions)}"));
            return accuracy;
        }

        double taskIdentity = Probe(f => f.Final);
        double[] blockIdentity = Enumerable.Range(0, blocks).Select(b => Probe(f => f.Blocks[b])).ToArray();
        // (a″) Every block's mean token side by side (what the routers of all blocks read together), and the raw pixels:
        // how much of the domain the backbone keeps anywhere, against what the images themselves carry.
        var allBlocks = train.Concat(test).ToDictionary(f => f.Final, f => cat(f.Blocks, 1));
        double allBlocksIdentity = Probe(f => allBlocks[f.Final]);
        double pixelIdentity = Probe(f => f.Pixels);
        foreach (var t in allBlocks.Values) t.Dispose();
        foreach (var (final, perBlock, pixels) in train.Concat(test))
        {
            final.Dispose();
            pixels.Dispose();
            foreach (var t in perBlock) t.Dispose();
        }

        // (b) Oracle routing: a depth-0 router is one learned vector per block; set to the one-hot of the task. (b′) The same
        // with E-WEMoE's MLP task vectors, each pruned per tensor to its default kept fraction: it separates what the pruning
        // costs from what the routers learn.
        var oracle = OracleRouting(experts, lambda, keep: null);
        var prunedOracle = OracleRouting(experts, lambda, keep: WeightEnsemblingOptions.DefaultEfficientKeep);

        // (c) Task arithmetic with λ chosen on the validation split, as the zoo table does.
        TaskAccuracies taskArithmetic;
        using (var evaluator = new CandidateEvaluator(experts))
        {
            var grid = ZooTable.Grids.First(g => g.Row == "Task arithmetic").Grid;
            var (best, _) = evaluator.SelectOnValidation(grid);
            taskArithmetic = best.Test!;
            Console.Error.WriteLine($"task arithmetic: best on validation {best.Candidate}");
        }

        // (e) Each task vector alone at λ, θ0 + λ·τ_t on task t: what task arithmetic at λ keeps of the expert without any
        // other task to interfere. Experts whose accuracy grows only linearly along the path from θ0 leave task
        // arithmetic at a small λ near the pre-trained model, however little the task vectors interfere.
        var alone = new Dictionary<string, double>(StringComparer.Ordinal);
        var atZero = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int t = 0; t < names.Count; t++)
        {
            using var scope = NewDisposeScope();
            var expert = experts.Expert(names[t]);
            var scaled = experts.Pretrained.ToDictionary(kv => kv.Key,
                kv => kv.Value.is_floating_point() ? kv.Value + lambda * (expert[kv.Key] - kv.Value) : kv.Value);
            var data = experts.LoadData(names[t]).Test;
            using var images = data.ToTensor();
            using var labels = data.LabelsToTensor();
            alone[names[t]] = ClassifierEvaluation.Accuracy(
                x => experts.Head(names[t]).Forward(VisionTransformer.Forward(config, scaled, x)), images, labels);
            // The zero of the share: θ0 behind the same head (the manifest's probe may be another head).
            atZero[names[t]] = ClassifierEvaluation.Accuracy(
                x => experts.Head(names[t]).Forward(VisionTransformer.Forward(config, experts.Pretrained, x)), images, labels);
        }

        // (d) Each expert against the pre-trained probe (both from the manifest, test split).
        var table = new AccuracyTable(names, individual);
        table.Add("Pre-trained (linear probe)", new TaskAccuracies(experts.Tasks.ToDictionary(t => t.Name, t => t.PretrainedLinearProbe.Test)));
        table.Add("Individual", new TaskAccuracies(individual));
        table.Add("Task arithmetic", taskArithmetic);
        table.Add(string.Create(inv, $"Oracle routing (MLP-upscaled, non-MLP TA λ={lambda})"), new TaskAccuracies(oracle));
        table.Add(string.Create(inv, $"Oracle routing, MLP task vectors pruned to {100 * WeightEnsemblingOptions.DefaultEfficientKeep:F0}% per tensor (E-WEMoE's)"), new TaskAccuracies(prunedOracle));
        table.Add(string.Create(inv, $"Each task vector alone, λ={lambda} (θ0 + λ·τ_t on task t)"), new TaskAccuracies(alone));
        Console.WriteLine(table.ToMarkdown());

        double oracleNormalised = new TaskAccuracies(oracle).NormalizedAverage(individual);
        double taNormalised = taskArithmetic.NormalizedAverage(individual);
        double worstGain = experts.Tasks.Min(t => t.Individual.Test - t.PretrainedLinearProbe.Test);
        string worstTask = experts.Tasks.MinBy(t => t.Individual.Test - t.PretrainedLinearProbe.Test)!.Name;
        string Check(bool ok) => ok ? "yes" : "**no**";
        Console.WriteLine("| structure (issue 13) | goal | measured | met |");
        Console.WriteLine("|---|---|---:|---|");
        Console.WriteLine(string.Create(inv, $"| (a) task told from pre-trained features (linear probe, {perTask} train / {perTask} test images per task) | ≥ 99% | {100 * taskIdentity:F1}% | {Check(taskIdentity >= 0.99)} |"));
        Console.WriteLine(string.Create(inv, $"| (a′) task told from each block's mean MLP-input token of the pre-trained model (what a router reads), worst block – best block | ≥ 99% | {100 * blockIdentity.Min():F1}% – {100 * blockIdentity.Max():F1}% | {Check(blockIdentity.Min() >= 0.99)} |"));
        Console.WriteLine(string.Create(inv, $"| (a″) task told from every block's mean MLP-input token together (what the routers read between them) | (none) | {100 * allBlocksIdentity:F1}% | |"));
        Console.WriteLine(string.Create(inv, $"| (a‴) task told from the raw pixels (a linear probe on the images, no backbone) | (none) | {100 * pixelIdentity:F1}% | |"));
        Console.WriteLine(string.Create(inv, $"| (b) oracle routing of the MLP-upscaled model, normalised | ≥ 98% | {100 * oracleNormalised:F1}% | {Check(oracleNormalised >= 0.98)} |"));
        double prunedNormalised = new TaskAccuracies(prunedOracle).NormalizedAverage(individual);
        Console.WriteLine(string.Create(inv, $"| (b′) the same with E-WEMoE's MLP task vectors, each pruned per tensor to its {100 * WeightEnsemblingOptions.DefaultEfficientKeep:F0}% largest entries (E-WEMoE's oracle routing), normalised | (none) | {100 * prunedNormalised:F1}% | |"));
        Console.WriteLine(string.Create(inv, $"| (c) task arithmetic, normalised | ≤ 85% | {100 * taNormalised:F1}% | {Check(taNormalised <= 0.85)} |"));
        Console.WriteLine(string.Create(inv, $"| (d) smallest gain of an expert over the pre-trained probe ({worstTask}) | ≫ 0 | {100 * worstGain:+0.0;-0.0} points | {Check(worstGain >= 0.1)} |"));
        var kept = experts.Tasks.Select(t => (t.Name, Share: (alone[t.Name] - atZero[t.Name]) / (t.Individual.Test - atZero[t.Name])))
            .OrderBy(k => k.Share).ToList();
        double median = kept.Count % 2 == 1 ? kept[kept.Count / 2].Share : (kept[kept.Count / 2 - 1].Share + kept[kept.Count / 2].Share) / 2;
        Console.WriteLine(string.Create(inv, $"| (e) share of an expert's gain over θ0 (same head) that its task vector keeps alone at λ = {lambda}, median (worst: {kept[0].Name}) | (none) | {100 * median:F0}% ({100 * kept[0].Share:F0}%) | |"));
        return 0;
    }

    /// <summary>
    /// Oracle routing: a depth-0 router is one learned vector per block; set to the one-hot of the task, each task's images
    /// go through its own expert's MLPs (everything else task arithmetic at λ). With <paramref name="keep"/>, the MLP task
    /// vectors are E-WEMoE's, each pruned per tensor to that fraction of its largest entries: what the pruning costs,
    /// apart from what the routers learn. Test-split accuracy per task.
    /// </summary>
    public static Dictionary<string, double> OracleRouting(ExpertPool experts, double lambda, double? keep)
    {
        var names = experts.TaskNames;
        var accuracy = new Dictionary<string, double>(StringComparer.Ordinal);
        using var moe = WeightEnsemblingMoE.Create(experts.Config, experts.Pretrained, experts.Experts,
            new WeightEnsemblingOptions { RouterDepth = 0, Lambda = lambda, TaskVectorKeep = keep });
        for (int t = 0; t < names.Count; t++)
        {
            using (no_grad())
            {
                foreach (var parameter in moe.RouterParameters.Values)
                {
                    parameter.zero_();
                    parameter[t] = 1f;
                }
            }

            var data = experts.LoadData(names[t]).Test;
            using var images = data.ToTensor();
            using var labels = data.LabelsToTensor();
            accuracy[names[t]] = ClassifierEvaluation.Accuracy(x => experts.Head(names[t]).Forward(moe.Forward(x)), images, labels);
        }
        return accuracy;
    }

    /// <summary>
    /// <c>bench pruned-oracle ZOO --keeps 0.05,0.1,...</c>: E-WEMoE's oracle routing at each kept fraction of the MLP task
    /// vectors, normalised to the experts, as a table: how much of each task vector E-WEMoE must keep on this zoo.
    /// </summary>
    public static int RunPrunedOracle(string zoo, double lambda, IReadOnlyList<double> keeps)
    {
        set_num_threads(1);
        var inv = CultureInfo.InvariantCulture;
        using var experts = ExpertPool.Load(zoo);
        var names = experts.TaskNames;
        var individual = experts.Tasks.ToDictionary(t => t.Name, t => t.Individual.Test);
        Console.WriteLine("| MLP task vectors kept per tensor | " + string.Join(" | ", names) + " | avg | norm. avg |");
        Console.WriteLine("|---|" + string.Concat(Enumerable.Repeat("---:|", names.Count + 2)));
        foreach (double? keep in keeps.Select(k => k >= 1 ? (double?)null : k))
        {
            var accuracy = new TaskAccuracies(OracleRouting(experts, lambda, keep));
            string label = keep is double k ? string.Create(inv, $"{100 * k:0.#}%") : "all (WEMoE's)";
            Console.WriteLine(string.Create(inv, $"| {label} | {string.Join(" | ", names.Select(n => (100 * accuracy.PerTask[n]).ToString("F1", inv)))} | {100 * accuracy.Average:F1} | {100 * accuracy.NormalizedAverage(individual):F1} |"));
        }
        return 0;
    }
}
