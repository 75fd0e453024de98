using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

/// <summary>Issue 17 item 6: consensus with more required tasks than experts would silently return the base; it is an error.</summary>
[TestClass]
public sealed class ConsensusMinTasksTests
{
    [TestMethod]
    public void MinTasksAboveTheExpertCountIsRefused()
    {
        var baseModel = new Dictionary<string, Tensor> { ["w"] = zeros(4) };
        var experts = new[] { new Dictionary<string, Tensor> { ["w"] = ones(4) }, new Dictionary<string, Tensor> { ["w"] = ones(4).Times(2) } };
        var method = new ConsensusMerge(minTasks: 3);
        var error = Assert.ThrowsExactly<ArgumentException>(() => new InMemoryMergeDriver().Merge(method, baseModel, experts));
        StringAssert.Contains(error.Message, "min-tasks 3 is more than the 2 expert(s)");
    }

    [TestMethod]
    public void MinTasksEqualToTheExpertCountRuns()
    {
        var baseModel = new Dictionary<string, Tensor> { ["w"] = zeros(4) };
        var experts = new[] { new Dictionary<string, Tensor> { ["w"] = ones(4) }, new Dictionary<string, Tensor> { ["w"] = ones(4).Times(2) } };
        using var result = new InMemoryMergeDriver().Merge(new ConsensusMerge(minTasks: 2), baseModel, experts);
        Assert.IsNotNull(result);
    }
}
