using Microsoft.ML.Data;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using Microsoft.ML.ModelMerging.Tests.Zoo;
using static Microsoft.ML.ModelMerging.Tests.MLNet.MlNetTestData;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// TACT in an ML.NET pipeline: <c>MergeExperts</c> measures each task's correction on the rows of <c>Fit</c> that name
/// the task, and the pipeline scores each task with that task's corrected model, as the TorchSharp forward does.
/// </summary>
[TestClass]
public sealed class TactMergeExpertsTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    private sealed class Row
    {
        [ColumnName("pixels")]
        [VectorType(784)]
        public float[] Pixels { get; set; } = [];

        [ColumnName("task")]
        public string Task { get; set; } = "";
    }

    private sealed class Prediction
    {
        [ColumnName("Score_optical-digits")]
        public float[] DigitScores { get; set; } = [];

        [ColumnName("PredictedLabel_glyph-letters")]
        public string Letter { get; set; } = "";

        [ColumnName("Score_glyph-letters")]
        public float[] LetterScores { get; set; } = [];
    }

    [TestMethod]
    public void FitMeasuresTheCorrectionsOnItsRowsAndEveryTaskScoresLikeTheTorchModel()
    {
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var ml = new MLContext(seed: 1);
        // Fit: 32 unlabeled images of each task, each row naming its task; scored: other images of both tasks.
        const int fit = 32;
        float[][] fitPixels = [.. TactTestData.Images(TwoTasks[0], fit), .. TactTestData.Images(TwoTasks[1], fit)];
        string[] fitTasks = [.. Enumerable.Repeat(TwoTasks[0], fit), .. Enumerable.Repeat(TwoTasks[1], fit)];
        float[][] scored = [.. TactTestData.Images(TwoTasks[0], fit + 6).Skip(fit), .. TactTestData.Images(TwoTasks[1], fit + 6).Skip(fit)];

        var options = new MergeExpertsOptions { Method = "tact", TaskColumnName = "task", InputRange = PixelRange.Unit };
        options.Parameters["base-method"] = "ties";
        options.Parameters["examples"] = fit.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var estimator = ml.Transforms.MergeExperts(pool, options);
        Assert.AreEqual(AlgorithmNeeds.UnlabeledImages | AlgorithmNeeds.TaskAtInference, estimator.Algorithm.Needs);
        using MergeExpertsTransformer model = estimator.Fit(Rows(ml, fitPixels, tasks: fitTasks));
        Assert.HasCount(TwoTasks.Length, model.ModelPaths, "one ONNX model per task");
        IDataView output = model.Transform(Rows(ml, scored, tasks: scored.Select(_ => "").ToArray()));

        // The same correction in TorchSharp: TACT on TIES with the same images per task.
        using var images = new UnlabeledImages(
            TactTestData.Tensor(pool, fitPixels),
            TwoTasks.ToDictionary(t => t, t => TactTestData.Tensor(pool, TactTestData.Images(t, fit)), StringComparer.Ordinal));
        using var reference = TactAlgorithm.Instance.Run(pool, MergeParameters.Parse("base-method=ties", $"examples={fit}"), new AlgorithmContext { Images = images });
        using var uncorrected = MergeAlgorithmRegistry.Default.Get("ties").Run(pool, MergeParameters.Empty, new AlgorithmContext());
        using var x = TactTestData.Tensor(pool, scored);
        foreach (string task in TwoTasks)
        {
            float[][] actual = output.GetColumn<float[]>($"Score_{task}").ToArray();
            float[][] expected = Probabilities(reference, task, x);
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference(actual, expected), task);
            Assert.IsGreaterThan(0.05, MaxAbsDifference(actual, Probabilities(uncorrected, task, x)), $"{task}: corrected");
            CollectionAssert.AreEqual(
                expected.Select(e => Predicted(e, pool.Head(task).ClassNames)).ToArray(),
                output.GetColumn<string>($"PredictedLabel_{task}").ToArray(), task);
        }

        // One row at a time through a PredictionEngine: the same scores.
        var engine = ml.Model.CreatePredictionEngine<Row, Prediction>(model);
        float[][] digits = Probabilities(reference, TwoTasks[0], x);
        float[][] letters = Probabilities(reference, TwoTasks[1], x);
        for (int i = 0; i < scored.Length; i++)
        {
            var prediction = engine.Predict(new Row { Pixels = scored[i] });
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference([prediction.DigitScores], [digits[i]]), $"row {i}");
            Assert.IsLessThanOrEqualTo(1e-4, MaxAbsDifference([prediction.LetterScores], [letters[i]]), $"row {i}");
            Assert.AreEqual(Predicted(letters[i], pool.Head(TwoTasks[1]).ClassNames), prediction.Letter, $"row {i}");
        }
    }

    /// <summary>Settings TACT refuses are refused when the estimator is created; a task without rows, by Fit, naming the task.</summary>
    [TestMethod]
    public void SettingsAreCheckedWhenTheEstimatorIsCreatedAndFitNamesATaskWithoutRows()
    {
        using var pool = ExpertPool.Load(CommittedZoo.Directory, TwoTasks);
        var ml = new MLContext(seed: 1);
        var noColumn = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(pool, new MergeExpertsOptions { Method = "tact", InputRange = PixelRange.Unit }));
        StringAssert.Contains(noColumn.Message, "set TaskColumnName");
        StringAssert.Contains(noColumn.Message, "tact learns from each task's own unlabeled images");
        var lambda = new MergeExpertsOptions { Method = "tact", TaskColumnName = "task" };
        lambda.Parameters["lambda"] = "0.3";
        var refused = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.MergeExperts(pool, lambda));
        StringAssert.Contains(refused.Message, "'lambda' was given, but the base method simple-average has no such parameter");

        float[][] pixels = TactTestData.Images(TwoTasks[0], 8);
        var options = new MergeExpertsOptions { Method = "tact", TaskColumnName = "task", InputRange = PixelRange.Unit };
        var error = Assert.ThrowsExactly<InvalidOperationException>(() =>
            ml.Transforms.MergeExperts(pool, options).Fit(Rows(ml, pixels, tasks: pixels.Select(_ => TwoTasks[0]).ToArray())));
        StringAssert.Contains(error.Message, $"no images were given for {TwoTasks[1]} (with MergeExperts: give Fit rows of every task, or set Task");
    }
}
