using Microsoft.ML.ModelMerging.Merging;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class TaskArithmeticTests
{
    [TestMethod]
    public void SimpleAverageMatchesReference()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 1, experts: 3);
        using var result = new InMemoryMergeDriver().Merge(
            MergeMethodRegistry.Default.Create("simple-average"), ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        foreach (var (name, expected) in MergeReference.SimpleAverage(model))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    [DataRow(0.3)]
    [DataRow(1.0)]
    [DataRow(-0.5)]
    public void TaskArithmeticMatchesReference(double lambda)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 2, experts: 4);
        var method = MergeMethodRegistry.Default.Create("task-arithmetic", MergeParameters.Parse($"lambda={lambda}"));
        using var result = new InMemoryMergeDriver().Merge(method, ReferenceModel.BaseModel(model), ReferenceModel.Experts(model));

        foreach (var (name, expected) in MergeReference.TaskArithmetic(model, lambda))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    public void TaskArithmeticDefaultsToLambdaPointThree()
    {
        var method = (TaskArithmeticMerge)MergeMethodRegistry.Default.Create("task-arithmetic");
        Assert.AreEqual(0.3, method.Lambda);
    }

    [TestMethod]
    public void ExpertWeightsScaleEachTaskVector()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 3, experts: 3);
        double[] weights = [0.7, 2.0, -0.25];
        using var result = new InMemoryMergeDriver().Merge(
            new TaskArithmeticMerge(0.3), ReferenceModel.BaseModel(model), ReferenceModel.Experts(model), weights);

        foreach (var (name, expected) in MergeReference.TaskArithmetic(model, 0.3, weights))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }
}
