using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

/// <summary>Issue 17 item 3: a merge whose result is not finite once stored fails, naming the tensor, and writes nothing.</summary>
[TestClass]
public sealed class NonFiniteOutputTests
{
    private static (string Base, string Expert) Write(TempDirectory dir, float expertScale)
    {
        var baseModel = new Dictionary<string, Tensor> { ["a.weight"] = ones(4, 4), ["b.weight"] = ones(8) };
        var expert = new Dictionary<string, Tensor> { ["a.weight"] = ones(4, 4), ["b.weight"] = ones(8).Times(expertScale) };
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseModel);
        SafeTensorsWriter.Save(dir.File("expert.safetensors"), expert);
        return (dir.File("base.safetensors"), dir.File("expert.safetensors"));
    }

    private static void AssertRefused(string method, string parameters, float expertScale, SafeTensorsDType? dtype = null, string tensor = "b.weight")
    {
        using var dir = new TempDirectory();
        var (baseModel, expert) = Write(dir, expertScale);
        var job = new MergeJob
        {
            Method = method,
            Parameters = parameters.Split(';', StringSplitOptions.RemoveEmptyEntries).ToDictionary(p => p.Split('=')[0], p => p.Split('=')[1]),
            Base = baseModel,
            Experts = [new MergeJobExpert(expert)],
            Output = dir.File("out/merged.safetensors"),
            OutputDType = dtype,
        };
        var error = Assert.ThrowsExactly<MergeInputException>(() => job.Run());
        Assert.AreEqual(tensor, error.TensorName);
        StringAssert.Contains(error.Message, $"merged tensor '{tensor}' is not finite");
        Assert.IsEmpty(Directory.GetFiles(dir.File("out"), "*", SearchOption.AllDirectories), "nothing is written, not even a temporary file");
    }

    [TestMethod]
    public void HugeLambdaOnTheElementwisePath() =>
        AssertRefused("task-arithmetic", "lambda=1e39", 2f, tensor: "a.weight"); // λ is ∞ in float32: even a zero task vector gives NaN

    [TestMethod]
    public void FiniteExpertPushedPastFloatRangeByTies() => AssertRefused("ties", "lambda=10;keep=1", 3e38f);

    [TestMethod]
    public void FiniteExpertPushedPastFloatRangeByDare() => AssertRefused("dare", "lambda=10;drop-rate=0.1", 3e38f);

    [TestMethod]
    public void FiniteFloat32PastTheHalfRange() => AssertRefused("task-arithmetic", "lambda=1", 1e5f, SafeTensorsDType.F16);

    [TestMethod]
    public void InMemoryDriverRefusesToo()
    {
        var baseModel = new Dictionary<string, Tensor> { ["w"] = ones(3) };
        var expert = new Dictionary<string, Tensor> { ["w"] = full(3, 3e38f) };
        var method = MergeMethodRegistry.Default.Create("task-arithmetic", new MergeParameters(new Dictionary<string, string> { ["lambda"] = "10" }));
        var error = Assert.ThrowsExactly<MergeInputException>(() => new InMemoryMergeDriver().Merge(method, baseModel, [expert]));
        Assert.AreEqual("w", error.TensorName);
    }
}
