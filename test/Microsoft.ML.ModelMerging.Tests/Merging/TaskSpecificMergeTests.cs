using Microsoft.ML.ModelMerging.Merging;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class TaskSpecificMergeTests
{
    [TestMethod]
    [DataRow("0.5")]
    [DataRow("0.5,0.25,0.375")]
    public void TallMasksMaterializeEachTaskLikeTheReference(string tallLambda)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 30, experts: 3);
        double[] tallLambdas = [.. tallLambda.Split(',').Select(double.Parse)];
        var method = MergeMethodRegistry.Default.Create("tall-masks", MergeParameters.Parse($"tall-lambda={tallLambda}", "lambda=0.3"));
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        Assert.IsTrue(result.HasTaskSpecificWeights);
        for (int task = 0; task < 3; task++)
        {
            var materialized = result.MaterializeTask(task);
            foreach (var (name, expected) in MergeReference.TallTaskModel(model, tallLambdas, task))
            {
                ReferenceModel.AssertClose(expected, materialized[name], 1e-6, $"task {task}, {name}");
            }

            ReferenceModel.DisposeAll(materialized);
        }

        // Without the task, the shared model is task arithmetic.
        foreach (var (name, expected) in MergeReference.TaskArithmetic(model, 0.3))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    public void TallMasksAreTheStoredBooleanMasks()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 31, experts: 4);
        using var result = new InMemoryMergeDriver().Merge(
            new TallMasksMerge(tallLambdas: [0.5]), ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        var expected = MergeReference.TallMasks(model, [0.5]);
        foreach (var t in model)
        {
            var parts = result.TaskSpecific[t.Name];
            for (int task = 0; task < 4; task++)
            {
                Assert.AreEqual(ScalarType.Bool, parts.Masks[task].dtype);
                CollectionAssert.AreEqual(expected[t.Name][task], parts.Masks[task].flatten().data<bool>().ToArray(), $"{t.Name}, task {task}");
                Assert.AreEqual(1.0, parts.Scales[task]);
            }
        }
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(1)]
    [DataRow(2)]
    [DataRow(4)] // every task; more than the 4 experts is refused (ConsensusMinTasksTests)
    public void ConsensusMatchesReference(int minTasks)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 32, experts: 4);
        var method = MergeMethodRegistry.Default.Create("consensus", MergeParameters.Parse($"min-tasks={minTasks}", "tall-lambda=0.25"));
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        Assert.IsFalse(result.HasTaskSpecificWeights);
        foreach (var (name, expected) in MergeReference.Consensus(model, 0.3, [0.25], minTasks))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    public void ConsensusDefaultsKeepWeightsOfAtLeastTwoTasks()
    {
        var method = (ConsensusMerge)MergeMethodRegistry.Default.Create("consensus");
        Assert.AreEqual(2, method.MinTasks);
        Assert.AreEqual(0.3, method.Lambda);
    }

    [TestMethod]
    public void EmrScalesMasksAndTaskModelsMatchReference()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 33, experts: 4);
        var method = (EmrMerge)MergeMethodRegistry.Default.Create("emr");
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        var (unified, scales, taskModels) = MergeReference.Emr(model);
        for (int task = 0; task < 4; task++)
        {
            Assert.AreEqual(scales[task], method.TaskScales![task], 1e-12 * scales[task], $"λ of task {task}");
            var materialized = result.MaterializeTask(task);
            foreach (var (name, expected) in taskModels[task])
            {
                ReferenceModel.AssertClose(expected, materialized[name], 1e-6, $"task {task}, {name}");
            }

            ReferenceModel.DisposeAll(materialized);
        }

        foreach (var t in model)
        {
            ReferenceModel.AssertClose([.. t.Base.Zip(unified[t.Name], (b, u) => b + u)], result.Merged[t.Name], 1e-6, t.Name);
        }
    }

    [TestMethod]
    public void EmrTaskWithEmptyMaskGetsScaleOne()
    {
        // Task 1 disagrees in sign with the elected sign everywhere, so its mask is empty.
        using var scope = NewDisposeScope();
        ReferenceTensor[] model = [new("w", [2], [0, 0], [[0.5, -0.5], [-0.25, 0.25]])];
        var method = new EmrMerge();
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        Assert.AreEqual(1.0, method.TaskScales![0]);
        Assert.AreEqual(1.0, method.TaskScales[1]);
        var task1 = result.MaterializeTask(1);
        ReferenceModel.AssertClose([0, 0], task1["w"], 0, "task 1 falls back to θ0");
        ReferenceModel.DisposeAll(task1);
    }

    [TestMethod]
    public void TaskCountOfTallLambdaMustMatchTheExperts()
    {
        var error = Assert.ThrowsExactly<ArgumentException>(() => new TallMasksMerge(tallLambdas: [0.2, 0.4]).Begin(3));
        Assert.Contains("tall-lambda has 2 values for 3 expert(s)", error.Message);
    }

    [TestMethod]
    public void MaterializingNeedsTaskSpecificWeights()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 34, experts: 2);
        using var result = new InMemoryMergeDriver().Merge(new TaskArithmeticMerge(), ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));
        Assert.ThrowsExactly<InvalidOperationException>(() => result.MaterializeTask(0));
    }
}
