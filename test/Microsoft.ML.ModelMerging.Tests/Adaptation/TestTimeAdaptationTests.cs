using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

[TestClass]
public sealed class TestTimeAdaptationTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    private static readonly TestTimeAdaptationOptions ShortRun = TestTimeAdaptationOptions.ForWeightEnsembling() with
    {
        LearningRate = 1e-3,
        Steps = 6,
        BatchSizePerTask = 8,
        Seed = 5,
    };

    [TestMethod]
    public void MeanEntropyMatchesTheDefinition()
    {
        using var scope = NewDisposeScope();
        Tensor logits = randn([7, 4], generator: new Generator(3)).Times(3);

        double actual = TestTimeAdaptation.MeanEntropy(logits).item<float>();

        Assert.AreEqual(AdaptationTestData.ReferenceMeanEntropy(logits), actual, 1e-6);
        Assert.AreEqual(Math.Log(4), TestTimeAdaptation.MeanEntropy(zeros(2, 4)).item<float>(), 1e-6);
    }

    [TestMethod]
    public void MarginalEntropyIsTheEntropyOfTheBatchsMeanPrediction()
    {
        using var scope = NewDisposeScope();
        Tensor logits = randn([9, 5], generator: new Generator(4)).Times(2);
        double[] values = logits.to(ScalarType.Float64).data<double>().ToArray();
        double[] mean = new double[5];
        for (int r = 0; r < 9; r++)
        {
            double[] row = values[(r * 5)..((r + 1) * 5)];
            double z = row.Sum(Math.Exp);
            for (int c = 0; c < 5; c++) mean[c] += Math.Exp(row[c]) / z / 9;
        }

        Assert.AreEqual(-mean.Sum(m => m * Math.Log(m)), TestTimeAdaptation.MarginalEntropy(logits).item<float>(), 1e-5);
        // Confident answers spread over every class: log C; the same confident answer everywhere: 0.
        Assert.AreEqual(Math.Log(5), TestTimeAdaptation.MarginalEntropy(eye(5).Times(50)).item<float>(), 1e-5);
        Assert.AreEqual(0, TestTimeAdaptation.MarginalEntropy(eye(5)[TensorIndex.Slice(0, 1)].repeat(4, 1).Times(50)).item<float>(), 1e-5);
    }

    /// <summary>
    /// A model whose answer ignores the image (a learned bias, started peaked): entropy alone drives every image to one
    /// confident answer; a diversity weight above 1 outweighs it, so the batch's answers spread evenly over the classes.
    /// </summary>
    [TestMethod]
    public void TheDiversityTermKeepsTheBatchFromCollapsingToOneAnswer()
    {
        using var scope = NewDisposeScope();
        using var head = ClassificationHead.Linear(["a", "b", "c", "d"], eye(4), zeros(4));
        var task = new AdaptationTask("t", rand([32, 1, 2, 2], generator: new Generator(1)), head);
        Tensor start = randn([4], generator: new Generator(2)).Times(3);
        Assert.IsLessThan(Math.Log(4) - 0.2, Spread(new ImageBlindModel(start), task), "the start is peaked");

        double SpreadAfter(double diversity)
        {
            var model = new ImageBlindModel(start);
            TestTimeAdaptation.Run(model, [task], ShortRun with { Steps = 300, LearningRate = 0.05, DiversityWeight = diversity });
            return Spread(model, task);
        }

        Assert.IsLessThan(0.05, SpreadAfter(0), "entropy alone: one answer for every image");
        Assert.IsGreaterThan(Math.Log(4) - 0.05, SpreadAfter(2), "with the diversity term: every class alike");
        Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(new ImageBlindModel(start), [task], ShortRun with { DiversityWeight = -1 }));
    }

    /// <summary>
    /// With answers that depend on the image, the two terms pull apart: each image's answer confident (low mean entropy)
    /// and the batch's answers spread over the classes (high entropy of the mean), which a diversity term on anything but
    /// the batch's mean prediction would not give.
    /// </summary>
    [TestMethod]
    public void WithTheDiversityTermEachAnswerIsConfidentAndTheAnswersDiffer()
    {
        using var scope = NewDisposeScope();
        using var head = ClassificationHead.Linear(["a", "b", "c", "d"], eye(4), zeros(4));
        var task = new AdaptationTask("t", randn([32, 1, 2, 2], generator: new Generator(3)), head);
        var model = new LinearModel(randn([4, 4], generator: new Generator(4)).Times(0.1));
        TestTimeAdaptation.Run(model, [task], ShortRun with { Steps = 300, LearningRate = 0.05, DiversityWeight = 2 });

        using var noGrad = no_grad();
        Tensor logits = head.Forward(model.Forward(task.Images));
        Assert.IsLessThan(0.3, TestTimeAdaptation.MeanEntropy(logits).item<float>(), "each answer confident");
        Assert.IsGreaterThan(Math.Log(4) - 0.1, TestTimeAdaptation.MarginalEntropy(logits).item<float>(), "answers spread");
    }

    private static double Spread(IAdaptableModel model, AdaptationTask task)
    {
        using var noGrad = no_grad();
        return TestTimeAdaptation.MarginalEntropy(task.Head.Forward(model.Forward(task.Images))).item<float>();
    }

    /// <summary>Features = a learned vector, the same for every image.</summary>
    private sealed class ImageBlindModel(Tensor start) : IAdaptableModel
    {
        private readonly Parameter _bias = new(start.clone(), requires_grad: true);

        public IReadOnlyDictionary<string, Parameter> AdaptedParameters => new Dictionary<string, Parameter> { ["bias"] = _bias };

        public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();

        public Tensor Forward(Tensor images) => _bias.unsqueeze(0).expand(images.shape[0], -1);
    }

    /// <summary>Features = the flattened image times a learned matrix.</summary>
    private sealed class LinearModel(Tensor start) : IAdaptableModel
    {
        private readonly Parameter _weight = new(start.clone(), requires_grad: true);

        public IReadOnlyDictionary<string, Parameter> AdaptedParameters => new Dictionary<string, Parameter> { ["weight"] = _weight };

        public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();

        public Tensor Forward(Tensor images) => images.flatten(1).matmul(_weight);
    }

    [TestMethod]
    public void AdamMatchesTorchSharpsAdam()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        Tensor target = randn([3, 4], generator: generator);
        Tensor start = randn([3, 4], generator: generator);
        var ours = new Parameter(start.clone(), requires_grad: true);
        var theirs = new Parameter(start.clone(), requires_grad: true);
        using var adam = new AdamOptimizer(new Dictionary<string, Parameter> { ["p"] = ours }, 0.9, 0.999, 1e-8);
        using var reference = new Adam([theirs], lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8);

        for (int step = 0; step < 8; step++)
        {
            adam.ZeroGrad();
            ((ours - target).pow(2).Times(step + 1)).sum().backward();
            adam.Update(0.05);
            reference.zero_grad();
            ((theirs - target).pow(2).Times(step + 1)).sum().backward();
            reference.step();
        }

        Assert.AreEqual(8, adam.Step);
        Assert.IsLessThan(1e-6, ModelTestData.MaxAbsDiff(theirs.detach(), ours.detach()));
        Assert.IsGreaterThan(0.1, ModelTestData.MaxAbsDiff(start, ours.detach()));
    }

    [TestMethod]
    public void BatchesVisitEveryImageOncePerPassAndDependOnlyOnSeedTaskAndStep()
    {
        var sampler = new TaskBatchSampler(imageCount: 10, batchSize: 4, seed: 1, task: 0);
        long[] sequence = [.. Enumerable.Range(0, 5).SelectMany(sampler.Indices)];   // 20 positions = 2 passes

        CollectionAssert.AreEquivalent(Enumerable.Range(0, 10).Select(i => (long)i).ToArray(), sequence[..10]);
        CollectionAssert.AreEquivalent(Enumerable.Range(0, 10).Select(i => (long)i).ToArray(), sequence[10..]);
        CollectionAssert.AreNotEqual(sequence[..10], sequence[10..]);
        CollectionAssert.AreEqual(sequence[8..12], new TaskBatchSampler(10, 4, seed: 1, task: 0).Indices(2));
        CollectionAssert.AreNotEqual(sequence[..4], new TaskBatchSampler(10, 4, seed: 1, task: 1).Indices(0));
        CollectionAssert.AreNotEqual(sequence[..4], new TaskBatchSampler(10, 4, seed: 2, task: 0).Indices(0));
        // A batch larger than the task takes each image once: the whole task in a permutation of its own.
        long[] whole = new TaskBatchSampler(10, 25, seed: 1, task: 0).Indices(3);
        CollectionAssert.AreEquivalent(Enumerable.Range(0, 10).Select(i => (long)i).ToArray(), whole);
    }

    [TestMethod]
    public void CosineScheduleFallsFromTheRateTowardsZero()
    {
        var options = ShortRun with { Steps = 10, Schedule = LearningRateSchedule.Cosine };

        Assert.AreEqual(1e-3, options.LearningRateAt(0), 1e-15);
        Assert.AreEqual(0.5e-3, options.LearningRateAt(5), 1e-15);
        Assert.AreEqual(1e-3 * (1 + Math.Cos(Math.PI * 0.9)) / 2, options.LearningRateAt(9), 1e-15);
        Assert.AreEqual(1e-3, ShortRun.LearningRateAt(5));
    }

    [TestMethod]
    public void OnlyRouterParametersChangeAndHeadsGetNoGradient()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        var frozen = AdaptationTestData.Snapshot(model.MergedWeights);
        var mlpNames = Enumerable.Range(0, data.Config.Layers).SelectMany(b =>
        {
            var layer = ModelMerging.Models.VisionTransformerNames.Layer(b);
            return new[] { layer.Fc1, layer.Fc2 }.SelectMany(p => new[] { p + ".weight", p + ".bias" });
        }).ToList();
        foreach (string name in mlpNames)
        {
            frozen["pretrained " + name] = model.PretrainedMlpTensor(name).clone();
            frozen["tau " + name] = model.MlpTaskVectors(name).clone();
        }

        for (int t = 0; t < data.Tasks.Count; t++)
        {
            foreach (var (name, tensor) in data.Tasks[t].Head.ToTensors())
            {
                frozen[$"task {t} {name}"] = tensor.clone();
            }

            frozen[$"task {t} images"] = data.Tasks[t].Images.clone();
        }

        var routersBefore = AdaptationTestData.Snapshot(model.RouterParameters);
        var inputsBefore = AdaptationTestData.Snapshot(data.Pretrained);

        TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { Steps = 3 });

        foreach (var (name, before) in frozen)
        {
            Tensor after = name.StartsWith("pretrained ", StringComparison.Ordinal) ? model.PretrainedMlpTensor(name["pretrained ".Length..])
                : name.StartsWith("tau ", StringComparison.Ordinal) ? model.MlpTaskVectors(name["tau ".Length..])
                : name.StartsWith("task ", StringComparison.Ordinal) ? TaskTensor(data, name)
                : model.MergedWeights[name];
            Assert.IsTrue(ModelTestData.Identical(before, after), $"{name} changed");
        }

        foreach (var (name, before) in inputsBefore)
        {
            Assert.IsTrue(ModelTestData.Identical(before, data.Pretrained[name]), name);
        }

        foreach (var (name, before) in routersBefore)
        {
            Assert.IsGreaterThan(0.0, ModelTestData.MaxAbsDiff(before, model.RouterParameters[name].detach()), $"{name} did not change");
        }

        foreach (var task in data.Tasks)
        {
            Assert.IsTrue(task.Head.Parameters.All(p => p.requires_grad), "head trainability is restored after the run");
            Assert.IsTrue(task.Head.Parameters.All(p => p.grad is null), "heads received a gradient");
        }
    }

    private static Tensor TaskTensor(AdaptationTestData data, string key)
    {
        string[] parts = key.Split(' ');
        var task = data.Tasks[int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)];
        return parts[2] == "images" ? task.Images : task.Head.ToTensors()[parts[2]];
    }

    [TestMethod]
    public void AShortRunLowersTheEntropyOfTheTasks()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        double before = data.TotalEntropy(model.Forward);
        var reports = new List<AdaptationProgress>();

        var result = TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { Steps = 20 }, new SynchronousProgress(reports.Add));

        double after = data.TotalEntropy(model.Forward);
        Assert.IsLessThan(before - 0.01, after, $"entropy went from {before:F4} to {after:F4}");
        Assert.AreEqual(0, result.StartStep);
        Assert.HasCount(20, result.Losses);
        CollectionAssert.AreEqual(Enumerable.Range(1, 20).ToArray(), reports.Select(r => r.Step).ToArray());
        Assert.IsTrue(reports.All(r => r.TaskEntropies.Count == 2 && Math.Abs(r.TaskEntropies.Sum() - r.Loss) < 1e-12 && !r.CheckpointWritten));
    }

    [TestMethod]
    public void ACancelledRunResumedFromItsLastCheckpointEndsExactlyLikeAnUninterruptedRun()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var directory = new TempDirectory();
        string checkpoint = directory.File("tta.safetensors");
        var options = ShortRun with { Schedule = LearningRateSchedule.Cosine };

        using var uninterrupted = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        var full = TestTimeAdaptation.Run(uninterrupted, data.Tasks, options);

        // Checkpoints after steps 2 and 4; cancelled after step 5 is reported, so step 6 never runs.
        using var interrupted = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        using var cancellation = new CancellationTokenSource();
        var reports = new List<AdaptationProgress>();
        var progress = new SynchronousProgress(p =>
        {
            reports.Add(p);
            if (p.Step == 5)
            {
                cancellation.Cancel();
            }
        });
        Assert.ThrowsExactly<OperationCanceledException>(() => TestTimeAdaptation.Run(
            interrupted, data.Tasks, options with { CheckpointPath = checkpoint, CheckpointEvery = 2 }, progress, cancellation.Token));
        CollectionAssert.AreEqual(new[] { false, true, false, true, false }, reports.Select(r => r.CheckpointWritten).ToArray());
        CollectionAssert.AreEqual(new[] { "tta.safetensors" }, Directory.GetFiles(directory.Path).Select(Path.GetFileName).ToArray());
        using (var file = Checkpoint.Open(checkpoint))
        {
            Assert.AreEqual("4", file.Metadata[AdaptationCheckpoint.StepMetadataKey]);
            Assert.IsTrue(file.Contains("optimizer.exp_avg.router.layers.0.fc1.weight"));
            Assert.IsTrue(file.Contains("optimizer.exp_avg_sq.router.layers.1.fc2.bias"));
        }

        using var resumed = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        var rest = TestTimeAdaptation.Run(resumed, data.Tasks, options with { CheckpointPath = checkpoint, CheckpointEvery = 2, ResumeFrom = checkpoint });

        Assert.AreEqual(4, rest.StartStep);
        CollectionAssert.AreEqual(full.Losses.Skip(4).ToArray(), rest.Losses.ToArray());
        foreach (var (name, parameter) in uninterrupted.RouterParameters)
        {
            Assert.IsTrue(ModelTestData.Identical(parameter.detach(), resumed.RouterParameters[name].detach()), $"{name} differs after resuming");
        }

        // The final checkpoint holds the finished routers and loads as a router file.
        using var loaded = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        loaded.LoadRouters(checkpoint);
        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(uninterrupted.Forward(data.Tasks[0].Images), loaded.Forward(data.Tasks[0].Images)));
        Assert.AreEqual(6, AdaptationCheckpoint.LoadParameters(checkpoint, loaded));
    }

    /// <summary>A checkpoint is also written once the interval has passed, between step checkpoints (a kill loses at most that much).</summary>
    [TestMethod]
    public void CheckpointsAreWrittenByTimeAsWellAsBySteps()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var directory = new TempDirectory();
        string checkpoint = directory.File("tta.safetensors");
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        var reports = new List<AdaptationProgress>();
        // Steps alone would checkpoint only after step 100 (never here) and after the last; a zero interval checkpoints every step.
        TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { CheckpointPath = checkpoint, CheckpointEvery = 100, CheckpointInterval = TimeSpan.Zero },
            new SynchronousProgress(reports.Add));
        Assert.IsTrue(reports.All(r => r.CheckpointWritten));

        reports.Clear();
        using var byStepsOnly = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        TestTimeAdaptation.Run(byStepsOnly, data.Tasks, ShortRun with { CheckpointPath = checkpoint, CheckpointEvery = 100, CheckpointInterval = TimeSpan.FromHours(1) },
            new SynchronousProgress(reports.Add));
        CollectionAssert.AreEqual(reports.Select((_, i) => i == reports.Count - 1).ToArray(), reports.Select(r => r.CheckpointWritten).ToArray());
    }

    [TestMethod]
    public void ResumingACheckpointOfAnotherRunOrModelIsRefused()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var directory = new TempDirectory();
        string checkpoint = directory.File("tta.safetensors");
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { Steps = 2, CheckpointPath = checkpoint });

        using var again = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        Assert.ThrowsExactly<InvalidDataException>(() =>
            TestTimeAdaptation.Run(again, data.Tasks, ShortRun with { Steps = 2, Seed = 6, ResumeFrom = checkpoint }));
        Assert.ThrowsExactly<InvalidDataException>(() =>
            TestTimeAdaptation.Run(again, data.Tasks, ShortRun with { Steps = 2, BatchSizePerTask = 4, ResumeFrom = checkpoint }));
        Assert.ThrowsExactly<InvalidDataException>(() =>
            TestTimeAdaptation.Run(again, data.Tasks, ShortRun with { Steps = 2, DiversityWeight = 1, ResumeFrom = checkpoint }));
        using var shared = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, new WeightEnsemblingOptions { ShareRouter = true });
        Assert.ThrowsExactly<InvalidDataException>(() =>
            TestTimeAdaptation.Run(shared, data.Tasks, ShortRun with { Steps = 2, ResumeFrom = checkpoint }));

        var finished = TestTimeAdaptation.Run(again, data.Tasks, ShortRun with { Steps = 2, ResumeFrom = checkpoint });
        Assert.AreEqual(2, finished.StartStep);
        Assert.IsEmpty(finished.Losses);
    }

    /// <summary>
    /// The routing term (softmax routing): with a large weight the routers learn to give each task's images to the expert
    /// the task names, whichever that is; it is refused where routing weights are no distribution or a task names no expert.
    /// </summary>
    [TestMethod]
    public void TheTaskRoutingTermSendsEachTasksImagesToTheExpertItNames()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        var softmax = new WeightEnsemblingOptions { SoftmaxRouting = true };
        var run = ShortRun with { Steps = 40, LearningRate = 1e-2, TaskRoutingWeight = 5 };
        // The two tasks' images told apart by their brightness (dark and light halves of the range), as domains are.
        var tasks = data.Tasks.Select((task, t) => task with { Images = task.Images.Times(0.5).PlusScalar(0.5 * t) }).ToList();

        // Mean weight each task's images give to the expert at position own(t), over blocks and images.
        double Share(WeightEnsemblingMoE model, Func<int, int> own)
        {
            using var noGrad = no_grad();
            return tasks.Select((task, t) => model.ForwardWithRouting(task.Images).Routing.select(2, own(t)).mean().item<float>()).Average();
        }

        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, softmax);
        Assert.AreEqual(0.5, Share(model, t => t), 0.05, "softmax routing starts at the experts' mean");
        TestTimeAdaptation.Run(model, [.. tasks.Select((task, t) => task with { Expert = t })], run);
        double share = Share(model, t => t);
        Assert.IsGreaterThan(0.9, share, $"own share {share:F3}");

        using var crossed = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList, softmax);
        TestTimeAdaptation.Run(crossed, [.. tasks.Select((task, t) => task with { Expert = 1 - t })], run);
        share = Share(crossed, t => 1 - t);
        Assert.IsGreaterThan(0.9, share, $"crossed: share of the named expert {share:F3}");

        using var raw = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        var error = Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(raw, [.. data.Tasks.Select((task, t) => task with { Expert = t })], run));
        StringAssert.Contains(error.Message, "routing=softmax");
        error = Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, data.Tasks, run));
        StringAssert.Contains(error.Message, $"Task '{data.Tasks[0].Name}' names no expert of the model's 2");
        error = Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, [.. data.Tasks.Select(task => task with { Expert = 2 })], run));
        StringAssert.Contains(error.Message, "(got 2)");
    }

    [TestMethod]
    public void InvalidOptionsAndTasksAreRejectedBeforeAnyStep()
    {
        using var scope = NewDisposeScope();
        using var data = AdaptationTestData.Create();
        using var model = WeightEnsemblingMoE.Create(data.Config, data.Pretrained, data.ExpertList);
        Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { LearningRate = 0 }));
        Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, data.Tasks, ShortRun with { CheckpointEvery = 2 }));
        Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, [], ShortRun));
        Assert.ThrowsExactly<ArgumentException>(() => TestTimeAdaptation.Run(model, [data.Tasks[0], data.Tasks[0]], ShortRun));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsExactly<OperationCanceledException>(() => TestTimeAdaptation.Run(model, data.Tasks, ShortRun, cancellationToken: cancelled.Token));
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress(Action<AdaptationProgress> report) : IProgress<AdaptationProgress>
    {
        public void Report(AdaptationProgress value) => report(value);
    }
}
