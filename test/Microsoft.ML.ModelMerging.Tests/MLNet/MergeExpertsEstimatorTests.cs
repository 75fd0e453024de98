using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Data;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Zoo;
using static Microsoft.ML.ModelMerging.Tests.MLNet.MlNetTestData;

namespace Microsoft.ML.ModelMerging.Tests.MLNet;

/// <summary>
/// <c>MergeExperts</c> on the committed zoo: what the fitted pipeline computes (against the TorchSharp forward of the same
/// merge), saving and loading, the output schema before fitting, and input errors.
/// </summary>
[TestClass]
public sealed class MergeExpertsEstimatorTests
{
    private static ExpertPool s_experts = null!;
    private static float[][] s_images = null!;
    private static int s_threads;

    [ClassInitialize]
    public static void LoadZoo(TestContext context)
    {
        // One TorchSharp thread: on a shared machine OpenMP's spinning threads slow small merges down by an order of magnitude.
        s_threads = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        s_experts = ExpertPool.Load(CommittedZoo.Directory);
        // Real test images of two tasks, in [0, 1].
        s_images = Images(s_experts.LoadData("mnist").Test, 12).Concat(Images(s_experts.LoadData("fashion-mnist").Test, 12)).ToArray();
    }

    [ClassCleanup]
    public static void ReleaseZoo()
    {
        s_experts.Dispose();
        TorchSharp.torch.set_num_threads(s_threads);
    }

    private static float[][] Bytes(float[][] unit) => unit.Select(p => p.Select(v => MathF.Round(v * 255)).ToArray()).ToArray();

    private static MergeExpertsOptions UnitRange(Action<MergeExpertsOptions>? configure = null)
    {
        var options = new MergeExpertsOptions { InputRange = PixelRange.Unit };
        configure?.Invoke(options);
        return options;
    }

    [TestMethod]
    public void EveryTaskIsScoredLikeTheTorchForwardOfTheSameMerge()
    {
        var ml = new MLContext(seed: 1);
        IDataView data = Rows(ml, s_images);
        var options = UnitRange(o => o.Method = "ties");
        options.Parameters["keep"] = "0.2";
        options.Parameters["lambda"] = "0.5";
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, options).Fit(data);
        IDataView scored = model.Transform(data);

        using var merged = Merge(s_experts, "ties", "keep=0.2", "lambda=0.5");
        Assert.HasCount(s_experts.TaskNames.Count, model.Outputs);
        foreach (MergeExpertsTaskOutput output in model.Outputs)
        {
            var head = s_experts.Head(output.Task);
            float[][] expected = TorchProbabilities(s_experts.Config, merged.Merged, head, s_images);
            float[][] actual = scored.GetColumn<float[]>($"Score_{output.Task}").ToArray();
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(actual, expected), output.Task);
            CollectionAssert.AreEqual(
                expected.Select(e => Predicted(e, head.ClassNames)).ToArray(),
                scored.GetColumn<string>($"PredictedLabel_{output.Task}").ToArray(),
                output.Task);
        }
    }

    /// <summary>The README's recipe for ML.NET's multiclass evaluator gives the accuracy counted from the predicted labels.</summary>
    [TestMethod]
    public void TheReadmesEvaluatorRecipeGivesEachTasksAccuracy()
    {
        var ml = new MLContext(seed: 1);
        var mnist = s_experts.LoadData("mnist").Test;
        float[][] images = Images(mnist, 12);
        string[] truth = [.. Enumerable.Range(0, 12).Select(i => mnist.ClassNames[mnist.Labels.Span[i]])];
        IDataView data = Rows(ml, images, tasks: truth, taskColumn: "Label");
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Method = "task-arithmetic")).Fit(data);
        IDataView scored = model.Transform(data);
        string[] predicted = scored.GetColumn<string>("PredictedLabel_mnist").ToArray();

        IDataView keyed = ml.Transforms.Conversion.MapValueToKey("Label", keyData:
            ml.Data.LoadFromEnumerable(s_experts.Manifest.Task("mnist").ClassNames.Select(c => new { Value = c }))).Fit(scored).Transform(scored);
        var metrics = ml.MulticlassClassification.Evaluate(keyed, "Label", "Score_mnist", "PredictedLabel_mnist");

        Assert.AreEqual(predicted.Zip(truth).Count(p => p.First == p.Second) / 12.0, metrics.MicroAccuracy, 1e-9);
    }

    private sealed class DigitInput
    {
        [ColumnName("raw")]
        [VectorType(784)]
        public float[] Raw { get; set; } = [];
    }

    private sealed class DigitPrediction
    {
        public float[] Score { get; set; } = [];

        public string PredictedLabel { get; set; } = "";
    }

    [TestMethod]
    public void SavedPipelineReloadsInAFreshContextWithIdenticalPredictions()
    {
        using var dir = new TempDirectory();
        var ml = new MLContext(seed: 1);
        IDataView data = Rows(ml, s_images, column: "raw");
        var pipeline = ml.Transforms.CopyColumns("pixels", "raw")
            .Append(ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Task = "mnist")));
        string zip = dir.File("merged.zip");
        float[][] scores;
        string[] labels;
        string onnx;
        using (var model = pipeline.Fit(data))
        {
            IDataView scored = model.Transform(data);
            scores = scored.GetColumn<float[]>("Score").ToArray();
            labels = scored.GetColumn<string>("PredictedLabel").ToArray();
            onnx = model.LastTransformer.ModelPaths.Single();
            ml.Model.Save(model, null, zip);
        }

        Assert.IsFalse(File.Exists(onnx), "the temporary ONNX file goes with the transformer");

        var fresh = new MLContext(seed: 2);
        ITransformer loaded = fresh.Model.Load(zip, out _);
        var types = Flatten(loaded).Select(t => t.GetType().FullName!).ToArray();
        Assert.IsFalse(types.Any(t => t.StartsWith("Microsoft.ML.ModelMerging", StringComparison.Ordinal)), string.Join(", ", types));
        Assert.Contains("Microsoft.ML.Transforms.Onnx.OnnxTransformer", types);

        IDataView reloaded = loaded.Transform(Rows(fresh, s_images, column: "raw"));
        CollectionAssert.AreEqual(labels, reloaded.GetColumn<string>("PredictedLabel").ToArray());
        Assert.AreEqual(0.0, MaxAbsDifference(scores, reloaded.GetColumn<float[]>("Score").ToArray()));

        var engine = fresh.Model.CreatePredictionEngine<DigitInput, DigitPrediction>(loaded);
        for (int i = 0; i < s_images.Length; i++)
        {
            DigitPrediction prediction = engine.Predict(new DigitInput { Raw = s_images[i] });
            Assert.AreEqual(labels[i], prediction.PredictedLabel);
            CollectionAssert.AreEqual(scores[i], prediction.Score);
        }

        (loaded as IDisposable)?.Dispose();
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer transformer) =>
        transformer is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : [transformer];

    [TestMethod]
    public void OutputSchemaIsKnownBeforeFit()
    {
        var ml = new MLContext(seed: 1);
        IDataView data = Rows(ml, s_images);
        var estimator = ml.Transforms.MergeExperts(s_experts, UnitRange());

        DataViewSchema predicted = estimator.GetOutputSchema(data.Schema);
        SchemaShape shape = estimator.GetOutputSchema(new SchemaShape(SchemaShapeColumns.Of(ml.Transforms, data.Schema)));
        using MergeExpertsTransformer model = estimator.Fit(data);
        DataViewSchema actual = model.GetOutputSchema(data.Schema);

        var visible = actual.Where(c => !c.IsHidden).Select(c => (c.Name, Type: c.Type.ToString())).ToArray();
        CollectionAssert.AreEquivalent(visible, predicted.Select(c => (c.Name, Type: c.Type.ToString())).ToArray());
        CollectionAssert.AreEquivalent(visible.Select(c => c.Name).ToArray(), shape.Select(c => c.Name).ToArray());
        foreach (DataViewSchema.Column column in actual.Where(c => !c.IsHidden))
        {
            SchemaShape.Column expected = shape.Single(c => c.Name == column.Name);
            Assert.AreEqual(column.Type is VectorDataViewType v ? v.ItemType : column.Type, expected.ItemType, column.Name);
            Assert.AreEqual(column.Type is VectorDataViewType ? SchemaShape.Column.VectorKind.Vector : SchemaShape.Column.VectorKind.Scalar, expected.Kind, column.Name);
        }

        var mnist = actual["Score_mnist"].Type as VectorDataViewType;
        Assert.IsNotNull(mnist);
        CollectionAssert.AreEqual(new[] { 10 }, mnist.Dimensions.ToArray(), "scores are a plain vector of the class count");
        Assert.AreEqual(TextDataViewType.Instance, actual["PredictedLabel_mnist"].Type);
    }

    [TestMethod]
    public void MissingOrWrongInputColumnFailsBeforeAnyWork()
    {
        var ml = new MLContext(seed: 1);
        var counting = new CountingAlgorithm();
        using var dir = new TempDirectory();
        var estimator = ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { Algorithm = counting, ModelPath = dir.File("model.onnx") });

        SchemaShape Shape(string name, DataViewType type) => new([SchemaShapeColumns.Of(ml.Transforms, name, type)]);
        DataViewSchema Schema(string name, DataViewType type)
        {
            var builder = new DataViewSchema.Builder();
            builder.AddColumn(name, type);
            return builder.ToSchema();
        }

        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Shape("image", new VectorDataViewType(NumberDataViewType.Single, 784))));
        StringAssert.Contains(missing.Message, "input column 'pixels' not found");
        StringAssert.Contains(missing.Message, "ExtractPixels");

        foreach (DataViewType wrong in new DataViewType[]
        {
            NumberDataViewType.Single,
            new VectorDataViewType(NumberDataViewType.Single),
            new VectorDataViewType(NumberDataViewType.Byte, 784),
            TextDataViewType.Instance,
        })
        {
            var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Shape("pixels", wrong)), wrong.ToString());
            StringAssert.Contains(error.Message, "input column 'pixels' is");
            StringAssert.Contains(error.Message, "expected a known-size vector of Single");
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Schema("pixels", wrong)), wrong.ToString());
        }

        var size = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Schema("pixels", new VectorDataViewType(NumberDataViewType.Single, 3, 32, 32))));
        StringAssert.Contains(size.Message, "holds 3072 values per row");
        StringAssert.Contains(size.Message, "784 values (1×28×28");
        StringAssert.Contains(size.Message, "2352 values (3×28×28 RGB planes");
        // ExtractPixels(interleavePixelColors: true) gives as many values, channel last: refused, not read as planes.
        var interleaved = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(Schema("pixels", new VectorDataViewType(NumberDataViewType.Single, 28, 28, 3))));
        StringAssert.Contains(interleaved.Message, "holds interleaved pixels (28×28×3, channel last)");
        estimator.GetOutputSchema(Schema("pixels", new VectorDataViewType(NumberDataViewType.Single, 3, 28, 28)));

        var fit = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(Rows(ml, [new float[100]])));
        StringAssert.Contains(fit.Message, "holds 100 values per row");
        Assert.AreEqual(0, counting.Merges, "nothing is merged for a wrong input");
        Assert.IsFalse(File.Exists(dir.File("model.onnx")));

        using MergeExpertsTransformer model = estimator.Fit(Rows(ml, Bytes(s_images)));
        Assert.AreEqual(1, counting.Merges);
        var transform = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => model.Transform(Rows(ml, [new float[2352]])));
        StringAssert.Contains(transform.Message, "fitted on Vector<Single, 784>");
    }

    [TestMethod]
    public void PixelsOfTheWrongRangeAreCaughtByFit()
    {
        var ml = new MLContext(seed: 1);
        var unit = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.MergeExperts(s_experts, UnitRange()).Fit(Rows(ml, Bytes(s_images))));
        StringAssert.Contains(unit.Message, "has values up to 255 but InputRange is Unit");
        var bytes = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.MergeExperts(s_experts).Fit(Rows(ml, s_images)));
        StringAssert.Contains(bytes.Message, "never exceed 1, but InputRange is Byte");
        var negative = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.MergeExperts(s_experts).Fit(Rows(ml, [Enumerable.Repeat(-1f, 784).ToArray()])));
        StringAssert.Contains(negative.Message, "has value -1 in row 0");
        // ExtractPixels with a negative offsetImage shifts bytes past 255.
        var shifted = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.MergeExperts(s_experts).Fit(Rows(ml, [Enumerable.Repeat(300f, 784).ToArray()])));
        StringAssert.Contains(shifted.Message, "has values up to 300 but InputRange is Byte");

        // An empty data view only gives the schema: a weight-only merge needs no rows.
        using var model = ml.Transforms.MergeExperts(s_experts).Fit(Rows(ml, [], size: 784));
        Assert.AreEqual(784, model.InputSize);
    }

    [TestMethod]
    public void OptionErrorsAreReportedWhenTheEstimatorIsCreated()
    {
        var ml = new MLContext(seed: 1);
        var task = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { Task = "cifar" }));
        StringAssert.Contains(task.Message, "task 'cifar' is not in the expert set");
        var method = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { Method = "average" }));
        StringAssert.Contains(method.Message, "Unknown merge method 'average'");
        var unset = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { Method = null! }));
        Assert.AreEqual("Method", unset.ParamName);
        var parameter = new MergeExpertsOptions { Method = "ties" };
        parameter.Parameters["kep"] = "0.2";
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, parameter)).Message, "Unknown parameter 'kep'");
        var clash = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { ScoreColumnName = "scores" }));
        StringAssert.Contains(clash.Message, "'scores_mnist' is used internally");

        // Scoring settings that would only fail after the merge are refused here too.
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.MergeExperts(s_experts,
            new MergeExpertsOptions { Scores = (OnnxScoreKind)42 })).Message, "Scores is 42; use one of");
        using var dir = new TempDirectory();
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts,
            new MergeExpertsOptions { ModelPath = dir.Path })).Message, "is a directory");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.MergeExperts(s_experts,
            new MergeExpertsOptions { OnnxIntraOpThreads = 0 })).Message, "OnnxIntraOpThreads must be 1 or more");
        // The CPU ONNX Runtime has no CUDA provider: a GPU without a fallback is refused, with one the merge scores on the CPU.
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts,
            new MergeExpertsOptions { GpuDeviceId = 0 })).Message, "CUDA execution provider");
        using var fallback = ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { GpuDeviceId = 0, FallbackToCpu = true, OnnxIntraOpThreads = 1 })
            .Fit(Rows(ml, Bytes(s_images)));
        Assert.IsNotNull(fallback.Transform(Rows(ml, Bytes(s_images))).Preview(2));
    }

    [TestMethod]
    public void AccuracyOnATaskEqualsTaskAccuracyOfTheSameMergedModel()
    {
        const string task = "optical-digits";
        ImageDataset test = s_experts.LoadData(task).Test;
        var ml = new MLContext(seed: 1);
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Task = task)).Fit(Rows(ml, Images(test, test.Count)));
        string[] predicted = model.Transform(Rows(ml, Images(test, test.Count))).GetColumn<string>("PredictedLabel").ToArray();
        double accuracy = predicted.Where((label, i) => label == test.ClassNames[test.Labels.Span[i]]).Count() / (double)test.Count;

        using var merged = Merge(s_experts, "task-arithmetic");
        using var single = ExpertPool.Load(CommittedZoo.Directory, [task]);
        TaskAccuracies reference = TaskAccuracy.Evaluate(single, s_experts.Config, merged.Merged, EvaluationSplit.Test);
        Assert.AreEqual(reference.PerTask[task], accuracy);
        Assert.IsGreaterThan(0.5, accuracy, "the merged model is far better than chance on a task it merged");
    }

    /// <summary>Long fits speak through ML.NET's own log and the Progress option, and a cancelled fit stops and leaves no model file.</summary>
    [TestMethod]
    public void FitReportsThroughTheMlContextLogAndCanBeCancelled()
    {
        using var dir = new TempDirectory();
        var ml = new MLContext(seed: 1);
        var logged = new List<string>();
        ml.Log += (_, e) => { if (e.Source == "MergeExperts") lock (logged) logged.Add(e.Message); };
        var steps = new List<long>();
        string[] tasks = [.. Enumerable.Repeat("mnist", 12), .. Enumerable.Repeat("fashion-mnist", 12)];
        IDataView data = Rows(ml, s_images, tasks: tasks);
        var options = UnitRange(o =>
        {
            o.Method = "adamerging-task";
            o.TaskColumnName = "task";
            o.Progress = new ModelMerging.Runtime.SynchronousProgress<AlgorithmProgress>(p => { if (p.Stage == "adapting") steps.Add(p.Done); });
        });
        options.Parameters["steps"] = "4";
        using (ml.Transforms.MergeExperts(s_experts, options).Fit(data)) { }
        CollectionAssert.AreEqual(new long[] { 1, 2, 3, 4 }, steps);
        Assert.IsTrue(logged.Any(m => m.Contains("Kind=Info] adamerging-task on 7 experts", StringComparison.Ordinal)), string.Join(" | ", logged));
        Assert.IsTrue(logged.Any(m => m.Contains("Kind=Info] adapting 4/4, loss", StringComparison.Ordinal)), string.Join(" | ", logged));

        using var cancellation = new CancellationTokenSource();
        var cancelled = UnitRange(o =>
        {
            o.Method = "adamerging-task";
            o.TaskColumnName = "task";
            o.ModelPath = dir.File("cancelled.onnx");
            o.Cancellation = cancellation.Token;
            o.Progress = new ModelMerging.Runtime.SynchronousProgress<AlgorithmProgress>(p => { if (p.Stage == "adapting" && p.Done == 2) cancellation.Cancel(); });
        });
        cancelled.Parameters["steps"] = "50";
        Assert.ThrowsExactly<OperationCanceledException>(() => ml.Transforms.MergeExperts(s_experts, cancelled).Fit(data));
        Assert.IsEmpty(Directory.GetFiles(dir.Path), "a cancelled fit writes no model");
    }

    /// <summary>Fisher merging through ML.NET reads the pool's labeled examples and scores like the library's own Fisher merge in TorchSharp.</summary>
    [TestMethod]
    public void FisherMergingScoresLikeTheFisherMergeInTorch()
    {
        var ml = new MLContext(seed: 1);
        IDataView data = Rows(ml, s_images);
        var options = UnitRange(o => o.Method = "fisher");
        options.Parameters["examples"] = "8";
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, options).Fit(data);
        IDataView scored = model.Transform(data);

        using var fisher = MergeAlgorithmRegistry.Default.Get("fisher").Run(s_experts, MergeParameters.Parse("examples=8"), new AlgorithmContext());
        var weights = fisher.Parts[0].Exporter.Weights;
        foreach (string task in new[] { "mnist", "fashion-mnist" })
        {
            float[][] expected = TorchProbabilities(s_experts.Config, weights, s_experts.Head(task), s_images);
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(scored.GetColumn<float[]>($"Score_{task}").ToArray(), expected), task);
        }

        // Not task arithmetic in disguise: the Fisher-weighted average differs from the plain one.
        using var average = Merge(s_experts, "simple-average");
        string fc1 = ModelMerging.Models.VisionTransformerNames.Weight(ModelMerging.Models.VisionTransformerNames.Layer(0).Fc1);
        Assert.IsGreaterThan(1e-3, Tests.Models.ModelTestData.MaxAbsDiff(weights[fc1], average.Merged[fc1]));
    }

    [TestMethod]
    public void TaskSpecificMethodsScoreEachTaskWithItsOwnModel()
    {
        using var dir = new TempDirectory();
        var ml = new MLContext(seed: 1);
        IDataView data = Rows(ml, s_images);
        var options = UnitRange(o =>
        {
            o.Method = "tall-masks";
            o.ModelPath = dir.File("tall.onnx");
        });
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, options).Fit(data);
        CollectionAssert.AreEqual(s_experts.TaskNames.Select(t => dir.File($"tall.{t}.onnx")).ToArray(), model.ModelPaths.ToArray());
        IDataView scored = model.Transform(data);

        using var merged = Merge(s_experts, "tall-masks");
        foreach (string task in new[] { "mnist", "fashion-mnist", "glyph-letters" })
        {
            var weights = merged.MaterializeTask(s_experts.TaskNames.ToList().IndexOf(task));
            try
            {
                float[][] expected = TorchProbabilities(s_experts.Config, weights, s_experts.Head(task), s_images);
                Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(scored.GetColumn<float[]>($"Score_{task}").ToArray(), expected), task);
            }
            finally
            {
                foreach (var tensor in weights.Values)
                {
                    tensor.Dispose();
                }
            }
        }

        model.Dispose();
        Assert.IsTrue(model.ModelPaths.All(File.Exists), "a model path given by the user is kept");
    }

    [TestMethod]
    public void ByteRgbInputGivesTheSamePredictionsAsUnitGrayInput()
    {
        var ml = new MLContext(seed: 1);
        float[][] rgb = s_images.Select(p => Enumerable.Repeat(p.Select(v => MathF.Round(v * 255)), 3).SelectMany(v => v).ToArray()).ToArray();
        float[][] gray = rgb.Select(p => p.Take(784).Select(v => v / 255f).ToArray()).ToArray();
        var byteOptions = new MergeExpertsOptions { Task = "fashion-mnist" };
        using var fromBytes = ml.Transforms.MergeExperts(s_experts, byteOptions).Fit(Rows(ml, rgb));
        using var fromUnit = ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Task = "fashion-mnist")).Fit(Rows(ml, gray));
        Assert.AreEqual(2352, fromBytes.InputSize);
        IDataView a = fromBytes.Transform(Rows(ml, rgb));
        IDataView b = fromUnit.Transform(Rows(ml, gray));
        CollectionAssert.AreEqual(b.GetColumn<string>("PredictedLabel").ToArray(), a.GetColumn<string>("PredictedLabel").ToArray());
        Assert.IsLessThanOrEqualTo(1e-5, MaxAbsDifference(a.GetColumn<float[]>("Score").ToArray(), b.GetColumn<float[]>("Score").ToArray()));
    }

    [TestMethod]
    public void ColourInputToAGrayModelIsScoredOnItsLuma()
    {
        // Three different planes, so that an average and the luma part: a colour image must score as the pool's image
        // reader and ML.NET's ConvertToGrayscale see it, 0.299·R + 0.587·G + 0.114·B.
        var ml = new MLContext(seed: 1);
        float[][] rgb = s_images.Select(p =>
        {
            var r = p.Select(v => MathF.Round(v * 255)).ToArray();
            var g = r.Reverse().ToArray();
            var b = r.Select(v => 255 - v).ToArray();
            return r.Concat(g).Concat(b).ToArray();
        }).ToArray();
        float[][] luma = rgb.Select(p => Enumerable.Range(0, 784)
            .Select(i => (float)(((0.299 * p[i]) + (0.587 * p[784 + i]) + (0.114 * p[1568 + i])) / 255)).ToArray()).ToArray();
        using var fromColour = ml.Transforms.MergeExperts(s_experts, new MergeExpertsOptions { Task = "fashion-mnist" }).Fit(Rows(ml, rgb));
        using var fromLuma = ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Task = "fashion-mnist")).Fit(Rows(ml, luma));
        var a = fromColour.Transform(Rows(ml, rgb)).GetColumn<float[]>("Score").ToArray();
        var b = fromLuma.Transform(Rows(ml, luma)).GetColumn<float[]>("Score").ToArray();
        Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(a, b));
        var averaged = rgb.Select(p => Enumerable.Range(0, 784).Select(i => (p[i] + p[784 + i] + p[1568 + i]) / 3 / 255).ToArray()).ToArray();
        var c = fromLuma.Transform(Rows(ml, averaged)).GetColumn<float[]>("Score").ToArray();
        Assert.IsGreaterThan(1e-2, MaxAbsDifference(a, c), "the planes' plain average would score other pixels");
    }
    [TestMethod]
    public void ModelFileRecordsTheMergeAndTheInputContract()
    {
        using var dir = new TempDirectory();
        var ml = new MLContext(seed: 1);
        string path = dir.File("model.onnx");
        var options = new MergeExpertsOptions { ModelPath = path, WeightPrecision = OnnxWeightPrecision.Float16 };
        options.Parameters["lambda"] = "0.4";
        using (ml.Transforms.MergeExperts(s_experts, options).Fit(Rows(ml, Bytes(s_images))))
        {
        }

        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(path);
        var metadata = session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("task-arithmetic", metadata["mlmerge.merge_method"]);
        Assert.AreEqual("{\"lambda\":\"0.4\"}", metadata["mlmerge.merge_parameters"]);
        Assert.AreEqual("0-255", metadata["mlmerge.mlnet.input_range"]);
        Assert.AreEqual("0-255", metadata["mlmerge.input_range"], "the adapter scales bytes, and says so where the plain export says 0-1");
        Assert.AreEqual("float16", metadata["mlmerge.weight_precision"]);
        var info = VitOnnxModelInfo.FromMetadata(metadata);
        Assert.AreEqual("pixels", info.InputName);
        CollectionAssert.AreEqual(s_experts.TaskNames.ToArray(), info.Tasks.Select(t => t.Name).ToArray());
        CollectionAssert.AreEquivalent(
            s_experts.TaskNames.SelectMany(t => new[] { "scores_" + t, "label_" + t }).ToArray(),
            session.OutputMetadata.Keys.ToArray());
        Assert.AreEqual(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.String, session.OutputMetadata["label_mnist"].ElementDataType);
    }

    /// <summary>An algorithm of a user's own: task arithmetic that counts its merges and may ask for the unlabeled images.</summary>
    private sealed class CountingAlgorithm : IMergeAlgorithm
    {
        private readonly IMergeAlgorithm _inner = MergeAlgorithmRegistry.Default.Get("task-arithmetic");

        public int Merges { get; private set; }

        public UnlabeledImages? LastImages { get; private set; }

        public float[][]? LastPixels { get; private set; }

        public Dictionary<string, int> LastCounts { get; } = [];

        public bool RequiresUnlabeledImages { get; init; }

        public string Name => "counting";

        public string Summary => "task arithmetic, counted";

        public AlgorithmNeeds Needs => _inner.Needs | (RequiresUnlabeledImages ? AlgorithmNeeds.UnlabeledImages : AlgorithmNeeds.None);

        public IReadOnlyList<MergeParameterSpec> Parameters => _inner.Parameters;

        public IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid => _inner.SearchGrid;

        public MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context)
        {
            Merges++;
            if (context.Images is { } images)
            {
                long n = images.Count;
                LastPixels = Enumerable.Range(0, (int)n).Select(i => images.All[i].flatten().data<float>().ToArray()).ToArray();
                LastCounts.Clear();
                foreach (var (task, tensor) in images.ByTask)
                {
                    LastCounts[task] = (int)tensor.shape[0];
                }
            }

            return _inner.Run(pool, parameters, context);
        }
    }

    [TestMethod]
    public void StrategiesThatAdaptReceiveTheImagesInUnitRangeGroupedByTask()
    {
        var ml = new MLContext(seed: 1);
        float[][] rgb = s_images.Select(p => p.Select(v => v * 255).Concat(p.Select(v => v * 255)).Concat(p.Select(v => v * 255)).ToArray()).ToArray();
        string[] tasks = s_images.Select((_, i) => i < 12 ? "mnist" : "fashion-mnist").ToArray();
        var strategy = new CountingAlgorithm { RequiresUnlabeledImages = true };
        var options = new MergeExpertsOptions { Algorithm = strategy, TaskColumnName = "task" };
        using (ml.Transforms.MergeExperts(s_experts, options).Fit(Rows(ml, rgb, tasks: tasks)))
        {
        }

        Assert.IsNotNull(strategy.LastPixels);
        Assert.IsLessThanOrEqualTo(1e-6, MaxAbsDifference(s_images, strategy.LastPixels));
        Assert.AreEqual(12, strategy.LastCounts["mnist"]);
        Assert.AreEqual(12, strategy.LastCounts["fashion-mnist"]);

        var wrong = Assert.ThrowsExactly<InvalidDataException>(() =>
            ml.Transforms.MergeExperts(s_experts, options).Fit(Rows(ml, rgb, tasks: tasks.Select(t => t == "mnist" ? "digits" : t).ToArray())));
        StringAssert.Contains(wrong.Message, "names task 'digits'");
    }
    [TestMethod]
    public void WeightEnsemblingAdaptsOnTheImagesOfFitAndScoresLikeTheSameAdaptationInTorch()
    {
        var ml = new MLContext(seed: 1);
        string[] tasks = s_images.Select((_, i) => i < 12 ? "mnist" : "fashion-mnist").ToArray();
        var options = UnitRange(o => { o.Method = "wemoe"; o.TaskColumnName = "task"; });
        options.Parameters["steps"] = "3";
        options.Parameters["learning_rate"] = "0.01";
        options.Parameters["seed"] = "5";
        options.Parameters["batch"] = "8";
        IDataView data = Rows(ml, s_images, tasks: tasks);
        using MergeExpertsTransformer model = ml.Transforms.MergeExperts(s_experts, options).Fit(data);
        IDataView scored = model.Transform(data);

        // The same adaptation run directly: routers seeded alike, the same images per task, the same Adam steps.
        using var moe = WeightEnsemblingMoE.Create(s_experts.Config, s_experts.Pretrained, s_experts.Experts, new WeightEnsemblingOptions { Seed = 5 });
        using var scope = TorchSharp.torch.NewDisposeScope();
        TorchSharp.torch.Tensor Images(int from) =>
            TorchSharp.torch.tensor(s_images.Skip(from).Take(12).SelectMany(p => p).ToArray(), [12, 1, 28, 28]);
        var adaptationTasks = new[]
        {
            new AdaptationTask("mnist", Images(0), s_experts.Head("mnist")),
            new AdaptationTask("fashion-mnist", Images(12), s_experts.Head("fashion-mnist")),
        };
        TorchSharp.torch.Tensor all = TorchSharp.torch.tensor(s_images.SelectMany(p => p).ToArray(), [s_images.Length, 1, 28, 28]);
        float[][] before = Probabilities(moe, all, "mnist");
        TestTimeAdaptation.Run(moe, adaptationTasks, TestTimeAdaptationOptions.ForWeightEnsembling() with { Steps = 3, LearningRate = 0.01, Seed = 5, BatchSizePerTask = 8 });
        foreach (string task in new[] { "mnist", "glyph-letters" })
        {
            float[][] expected = Probabilities(moe, all, task);
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(scored.GetColumn<float[]>($"Score_{task}").ToArray(), expected), task);
        }

        Assert.IsGreaterThan(1e-4, MaxAbsDifference(before, Probabilities(moe, all, "mnist")), "the routers moved");
    }

    private static float[][] Probabilities(WeightEnsemblingMoE moe, TorchSharp.torch.Tensor images, string task)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        var probabilities = TorchSharp.torch.nn.functional.softmax(s_experts.Head(task).Forward(moe.Forward(images)), 1);
        return Enumerable.Range(0, (int)images.shape[0]).Select(i => probabilities[i].data<float>().ToArray()).ToArray();
    }

    [TestMethod]
    public void AdaptingAlgorithmsNeedTheTaskOfEveryRowAndParametersAreChecked()
    {
        var ml = new MLContext(seed: 1);
        var noTasks = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Method = "adamerging-layer")));
        StringAssert.Contains(noTasks.Message, "set TaskColumnName");

        var notApplicable = Assert.ThrowsExactly<ArgumentException>(() =>
        {
            var options = UnitRange(o => { o.Method = "adamerging-task"; o.TaskColumnName = "task"; });
            options.Parameters["router_depth"] = "1";
            ml.Transforms.MergeExperts(s_experts, options);
        });
        StringAssert.Contains(notApplicable.Message, "Unknown parameter 'router_depth' for merge method 'adamerging-task' (known: steps, learning-rate, batch, lambda, clamp, diversity, seed)");

        // Fisher reads the pool's own labeled training examples: no task column needed.
        var fisher = ml.Transforms.MergeExperts(s_experts, UnitRange(o => o.Method = "fisher"));
        Assert.AreEqual(AlgorithmNeeds.LabeledData, fisher.Algorithm.Needs);

        var unknown = Assert.ThrowsExactly<ArgumentException>(() =>
        {
            var options = UnitRange(o => { o.Method = "wemoe"; o.TaskColumnName = "task"; });
            options.Parameters["stepz"] = "3";
            ml.Transforms.MergeExperts(s_experts, options);
        });
        StringAssert.Contains(unknown.Message, "Unknown parameter 'stepz' for merge method 'wemoe'");

        // A NaN pixel past the rows the range check samples is named by its row when an adapting method reads the images.
        float[][] images = [.. s_images.Select(p => (float[])p.Clone())];
        images[20][5] = float.NaN;
        string[] tasks = [.. Enumerable.Range(0, images.Length).Select(i => i < 12 ? "mnist" : "fashion-mnist")];
        var options = UnitRange(o => { o.Method = "wemoe"; o.TaskColumnName = "task"; });
        options.Parameters["steps"] = "1";
        var nan = Assert.ThrowsExactly<InvalidDataException>(() => ml.Transforms.MergeExperts(s_experts, options).Fit(Rows(ml, images, tasks: tasks)));
        StringAssert.Contains(nan.Message, "has value NaN in row 20; pixels must be finite");
    }
}
