using Microsoft.ML.ModelMerging.Adaptation;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MLNet;
using Microsoft.ML.ModelMerging.Models;
using Microsoft.ML.ModelMerging.Pools;
using Microsoft.ML.ModelMerging.TensorMath;
using Microsoft.ML.ModelMerging.Tests.Adaptation;
using static Microsoft.ML.ModelMerging.Tests.NonLocal.TactTestData;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.NonLocal;

/// <summary>
/// A pool whose experts share no pre-trained base (a non-local pool): simple averaging and TACT over it merge the experts
/// themselves; methods that form task vectors are refused, saying why.
/// </summary>
[TestClass]
public sealed class PoolWithoutBaseTests
{
    [ClassInitialize]
    public static void ClassInitialize(TestContext context) => SingleTorchThread.Enter();

    [ClassCleanup]
    public static void ClassCleanup() => SingleTorchThread.Exit();

    [TestMethod]
    public void SimpleAverageIsTheMeanOfTheExpertsAndTaskVectorMethodsAreRefused()
    {
        using var dir = new TempDirectory();
        using var pool = ExpertPool.Load(WriteBaselessPool(dir.Path, TwoTasks));
        Assert.IsFalse(pool.HasPretrained);

        using var model = MergeAlgorithmRegistry.Default.Get("simple-average").Run(pool, MergeParameters.Empty, new AlgorithmContext());
        Assert.HasCount(1, model.Parts);
        var merged = model.Parts[0].Exporter.Weights;
        CollectionAssert.AreEquivalent(pool.Expert(TwoTasks[0]).Keys.ToArray(), merged.Keys.ToArray());
        double worst = 0;
        foreach (var (name, value) in merged)
        {
            // The reference: the experts' mean in float64, without any base.
            using var scope = NewDisposeScope();
            Tensor mean = pool.Experts.Select(e => e[name].to_type(ScalarType.Float64)).Aggregate((a, b) => a.Plus(b)).DividedBy(pool.Experts.Count);
            Assert.AreEqual(ScalarType.Float32, value.dtype, name);
            worst = Math.Max(worst, value.to_type(ScalarType.Float64).sub(mean).abs().max().item<double>());
        }

        Assert.IsLessThanOrEqualTo(1e-6, worst);

        foreach (string method in new[] { "task-arithmetic", "ties", "tall-masks" })
        {
            var refused = Assert.ThrowsExactly<ArgumentException>(() => MergeAlgorithmRegistry.Default.Get(method).Run(pool, MergeParameters.Empty, new AlgorithmContext()), method);
            StringAssert.Contains(refused.Message, $"{method} forms task vectors against a pre-trained base, and the pool at {pool.Directory} has none");
        }

        // TACT over a base method that needs the base: refused the same way, by the job before its directory is written and
        // by MergeExperts when the estimator is created.
        using var images = Unlabeled(pool, TwoTasks);
        var tact = Assert.ThrowsExactly<ArgumentException>(() => TactAlgorithm.Instance.Run(pool, Parameters("base-method=task-arithmetic"), new AlgorithmContext { Images = images }));
        StringAssert.Contains(tact.Message, "has none");
        var job = Assert.ThrowsExactly<ArgumentException>(() => AdaptationJob.Run(pool, "tact", Parameters("base-method=task-arithmetic"), Path.Combine(dir.Path, "out")));
        StringAssert.Contains(job.Message, "has none");
        Assert.IsFalse(Directory.Exists(Path.Combine(dir.Path, "out")));
        var options = new MergeExpertsOptions { Method = "tact", TaskColumnName = "task" };
        options.Parameters["base-method"] = "ties";
        var estimator = Assert.ThrowsExactly<ArgumentException>(() => new MLContext().Transforms.MergeExperts(pool, options));
        StringAssert.Contains(estimator.Message, "ties forms task vectors against a pre-trained base");
    }

    [TestMethod]
    public void TactWithItsDefaultBaseCorrectsTheAverageOfAPoolWithoutABase()
    {
        using var dir = new TempDirectory();
        using var pool = ExpertPool.Load(WriteBaselessPool(dir.Path, TwoTasks));
        using var images = Unlabeled(pool, TwoTasks);
        using var model = TactAlgorithm.Instance.Run(pool, Parameters(), new AlgorithmContext { Images = images });
        using var average = MergeAlgorithmRegistry.Default.Get("simple-average").Run(pool, MergeParameters.Empty, new AlgorithmContext());

        Assert.HasCount(TwoTasks.Length, model.Parts);
        foreach (string task in TwoTasks)
        {
            var exporter = (CorrectedVitOnnxExporter)model.Part(task).Exporter;
            // The corrected backbone is the experts' average, and the correction matches the expert at every site.
            foreach (var (name, value) in average.Parts[0].Exporter.Weights)
            {
                Assert.IsTrue(Models.ModelTestData.Identical(value, exporter.Weights[name]), name);
            }

            using var scope = NewDisposeScope();
            Tensor x = images.ByTask[task];
            var expert = ActivationCorrection.SiteStatistics(pool.Config, pool.Expert(task), x);
            var corrected = ActivationCorrection.SiteStatistics(pool.Config, exporter.Weights, x, hooks: exporter.Correction.Forward);
            foreach (var site in ActivationCorrection.Sites(pool.Config))
            {
                Assert.IsLessThanOrEqualTo(1e-4, corrected[site].Mean.sub(expert[site].Mean).abs().max().item<double>(), $"{task} {site}");
            }
        }

        // Through the job too: the directory holds the average once and a correction per task.
        var result = AdaptationJob.Run(pool, "tact", Parameters(), Path.Combine(dir.Path, "out"));
        CollectionAssert.AreEquivalent(
            new[] { "merged.safetensors" }.Concat(TwoTasks.Select(CorrectedVitOnnxExporter.CorrectionFileName)).ToArray(),
            result.Manifest.Result!.Files.ToArray());
        using var loaded = AdaptedModel.Load(Path.Combine(dir.Path, "out"), pool);
        Assert.AreEqual(TwoTasks.Length, loaded.Parts.Count);
    }
}
