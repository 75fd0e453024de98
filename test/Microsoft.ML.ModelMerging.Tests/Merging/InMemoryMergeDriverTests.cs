using Microsoft.ML.ModelMerging.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class InMemoryMergeDriverTests
{
    [TestMethod]
    public void ExcludedTensorsAreCopiedFromTheBaseUntouched()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 50, experts: 2);
        var baseModel = ReferenceModel.BaseModel(model);
        var experts = ReferenceModel.Experts(model);
        baseModel["head.weight"] = torch.full(3, 2, 7f);
        baseModel["pooler.classifier.bias"] = torch.full(3, 5f);
        baseModel["embeddings.position_ids"] = torch.arange(4L);
        baseModel["frozen.buffer"] = torch.full(2, 9f);
        for (int i = 0; i < experts.Count; i++)
        {
            // Each expert's head differs from the base and from the other's; position ids are integer.
            experts[i] = new Dictionary<string, Tensor>(experts[i])
            {
                ["head.weight"] = torch.full(3, 2, -1f - i),
                ["pooler.classifier.bias"] = torch.full(3, (float)i),
                ["embeddings.position_ids"] = torch.arange(4L),
                ["frozen.buffer"] = torch.full(2, 100f),
            };
        }

        using var result = new InMemoryMergeDriver(new TensorFilter(["^frozen\\."])).Merge(new TaskArithmeticMerge(1.0), baseModel, experts);

        CollectionAssert.AreEqual(new[] { "embeddings.position_ids", "frozen.buffer", "head.weight", "pooler.classifier.bias" }, result.CopiedTensorNames.ToArray());
        CollectionAssert.AreEqual(model.Select(t => t.Name).ToArray(), result.MergedTensorNames.ToArray());
        foreach (string name in result.CopiedTensorNames)
        {
            Assert.AreEqual(baseModel[name].dtype, result.Merged[name].dtype, name);
            CollectionAssert.AreEqual(ReferenceModel.ToDoubles(baseModel[name]), ReferenceModel.ToDoubles(result.Merged[name]), name);
            Assert.AreNotEqual(baseModel[name].Handle, result.Merged[name].Handle, $"{name} is a copy");
        }

        foreach (var (name, expected) in MergeReference.TaskArithmetic(model, 1.0))
        {
            ReferenceModel.AssertClose(expected, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    public void ExpertsMayCarryTheirOwnHeads()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 51, experts: 2);
        var experts = ReferenceModel.Experts(model);
        experts[1] = new Dictionary<string, Tensor>(experts[1]) { ["head.bias"] = torch.zeros(10) };
        using var result = new InMemoryMergeDriver().Merge(new SimpleAverageMerge(), ReferenceModel.BaseModel(model), experts);
        Assert.IsFalse(result.Merged.ContainsKey("head.bias"));
    }

    [TestMethod]
    public void OutputKeepsTheBaseDtype()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 52, experts: 3);
        using var result = new InMemoryMergeDriver().Merge(
            new TiesMerge(), ReferenceModel.BaseModel(model, ScalarType.Float64), ReferenceModel.Experts(model, ScalarType.Float16));

        var (expected, _) = MergeReference.Ties(model, 0.3, 0.2, global: true, mean: false);
        foreach (var (name, values) in expected)
        {
            Assert.AreEqual(ScalarType.Float64, result.Merged[name].dtype);
            ReferenceModel.AssertClose(values, result.Merged[name], 1e-6, name);
        }
    }

    [TestMethod]
    public void MissingTensorIsNamedWithItsExpert()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 53, experts: 2);
        var experts = ReferenceModel.Experts(model);
        var second = new Dictionary<string, Tensor>(experts[1]);
        second.Remove("blocks.0.bias");
        experts[1] = second;

        var error = Merge(model, experts);
        Assert.AreEqual("Tensor 'blocks.0.bias' (shape [7]) is missing from expert 1 ('svhn').", error.Message);
        Assert.AreEqual("blocks.0.bias", error.TensorName);
        Assert.AreEqual(1, error.ExpertIndex);
    }

    [TestMethod]
    public void ExtraTensorIsNamedWithItsExpert()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 54, experts: 2);
        var experts = ReferenceModel.Experts(model);
        experts[0] = new Dictionary<string, Tensor>(experts[0]) { ["blocks.2.extra"] = torch.zeros(2) };

        var error = Merge(model, experts);
        Assert.AreEqual("Tensor 'blocks.2.extra' of expert 0 ('mnist') is not in the base model (exclude it by name if it is task-specific).", error.Message);
    }

    [TestMethod]
    public void ShapeMismatchIsNamedWithItsExpert()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 55, experts: 2);
        var experts = ReferenceModel.Experts(model);
        experts[1] = new Dictionary<string, Tensor>(experts[1]) { ["blocks.0.attn.weight"] = torch.zeros(5, 6) };

        var error = Merge(model, experts);
        Assert.AreEqual("Tensor 'blocks.0.attn.weight': expert 1 ('svhn') has shape [5, 6], expected the base model's [6, 5].", error.Message);
    }

    [TestMethod]
    public void IntegerExpertTensorIsRejected()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 56, experts: 2);
        var experts = ReferenceModel.Experts(model);
        experts[0] = new Dictionary<string, Tensor>(experts[0]) { ["blocks.0.bias"] = torch.zeros(7, dtype: ScalarType.Int32) };

        var error = Merge(model, experts);
        Assert.AreEqual("Tensor 'blocks.0.bias': expert 0 ('mnist') has dtype Int32 but the base model's is Float32.", error.Message);
    }

    [TestMethod]
    [DataRow(float.NaN)]
    [DataRow(float.PositiveInfinity)]
    public void NonFiniteExpertValuesAreNamed(float bad)
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 57, experts: 2);
        var experts = ReferenceModel.Experts(model);
        var poisoned = experts[1]["blocks.1.mlp.weight"].clone();
        poisoned[1, 2, 0] = torch.tensor(bad);
        poisoned[0, 0, 1] = torch.tensor(bad);
        experts[1] = new Dictionary<string, Tensor>(experts[1]) { ["blocks.1.mlp.weight"] = poisoned };

        var error = Merge(model, experts);
        Assert.AreEqual("Tensor 'blocks.1.mlp.weight': expert 1 ('svhn') contains 2 NaN or infinite value(s).", error.Message);
    }

    [TestMethod]
    public void NonFiniteBaseValuesAreNamed()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 58, experts: 2);
        var baseModel = ReferenceModel.BaseModel(model);
        baseModel["norm.scale"] = torch.tensor(float.NegativeInfinity);

        var error = Assert.ThrowsExactly<MergeInputException>(() => new InMemoryMergeDriver().Merge(new EmrMerge(), baseModel, ReferenceModel.Experts(model)));
        Assert.AreEqual("Tensor 'norm.scale': the base model contains 1 NaN or infinite value(s).", error.Message);
        Assert.IsNull(error.ExpertIndex);
    }

    [TestMethod]
    public void ArgumentCountsAreChecked()
    {
        using var scope = NewDisposeScope();
        var model = ReferenceModel.Create(seed: 59, experts: 2);
        var driver = new InMemoryMergeDriver();
        var baseModel = ReferenceModel.BaseModel(model);
        var experts = ReferenceModel.Experts(model);

        Assert.Contains("3 expert weight(s) given for 2 expert(s)", Assert.ThrowsExactly<ArgumentException>(() => driver.Merge(new SimpleAverageMerge(), baseModel, experts, [1, 1, 1])).Message);
        Assert.Contains("weight of expert 1 is NaN", Assert.ThrowsExactly<ArgumentException>(() => driver.Merge(new SimpleAverageMerge(), baseModel, experts, [1, double.NaN])).Message);
        Assert.Contains("At least one expert", Assert.ThrowsExactly<ArgumentException>(() => driver.Merge(new SimpleAverageMerge(), baseModel, [])).Message);
        Assert.Contains("'(' ", Assert.ThrowsExactly<ArgumentException>(() => new TensorFilter(["("])).Message);
    }

    [TestMethod]
    public void PlanIsCheckedFromSignaturesAlone()
    {
        // What a streaming driver has before reading any weight: names, dtypes and shapes from checkpoint headers.
        var baseModel = new Dictionary<string, TensorSignature>
        {
            ["encoder.weight"] = new(ScalarType.BFloat16, [4, 3]),
            ["encoder.steps"] = new(ScalarType.Int64, []),
            ["classifier.weight"] = new(ScalarType.Float32, [10, 4]),
        };
        var expert = new Dictionary<string, TensorSignature>(baseModel) { ["classifier.weight"] = new(ScalarType.Float32, [47, 4]) };

        var plan = MergePlan.Create(baseModel, [expert, expert]);
        CollectionAssert.AreEqual(new[] { "encoder.weight" }, plan.MergedTensorNames.ToArray());
        CollectionAssert.AreEqual(new[] { "classifier.weight", "encoder.steps" }, plan.CopiedTensorNames.ToArray());

        var wrongShape = new Dictionary<string, TensorSignature>(expert) { ["encoder.weight"] = new(ScalarType.Float32, [3, 4]) };
        Assert.AreEqual(
            "Tensor 'encoder.weight': expert 1 has shape [3, 4], expected the base model's [4, 3].",
            Assert.ThrowsExactly<MergeInputException>(() => MergePlan.Create(baseModel, [expert, wrongShape])).Message);
    }

    [TestMethod]
    public void MethodProtocolIsEnforced()
    {
        using var scope = NewDisposeScope();
        using var input = new MergeTensorInput("w", torch.zeros(3), [torch.ones(3), torch.ones(3)]);
        var ties = new TiesMerge();
        Assert.Contains("Begin(expertCount) was not called", Assert.ThrowsExactly<InvalidOperationException>(() => ties.MergeTensor(input)).Message);

        ties.Begin(2);
        Assert.AreEqual(
            "Merge method 'ties' needs 5 statistics pass(es) before merging; 0 finished.",
            Assert.ThrowsExactly<InvalidOperationException>(() => ties.MergeTensor(input)).Message);
        Assert.AreEqual(
            "Merge method 'ties': statistics pass 1 was not expected now (0 of 5 pass(es) finished).",
            Assert.ThrowsExactly<InvalidOperationException>(() => ties.AccumulateStatistics(1, input)).Message);

        ties.Begin(3);
        Assert.AreEqual(
            "Tensor 'w' comes with 2 task vector(s) but merge method 'ties' was begun with 3 expert(s).",
            Assert.ThrowsExactly<MergeInputException>(() => ties.AccumulateStatistics(0, input)).Message);
    }

    [TestMethod]
    public void TaskVectorInputsAreChecked()
    {
        using var scope = NewDisposeScope();
        Assert.AreEqual(
            "Tensor 'w': the task vector of expert 1 has shape [4], expected [3].",
            Assert.ThrowsExactly<MergeInputException>(() => new MergeTensorInput("w", torch.zeros(3), [torch.ones(3), torch.ones(4)])).Message);
        Assert.AreEqual(
            "Tensor 'w': the task vector of expert 0 is Float64, expected Float32.",
            Assert.ThrowsExactly<MergeInputException>(() => new MergeTensorInput("w", torch.zeros(3), [torch.ones(3, dtype: ScalarType.Float64)])).Message);
    }

    private static readonly string[] ExpertNames = ["mnist", "svhn"];

    private static MergeInputException Merge(ReferenceTensor[] model, List<IReadOnlyDictionary<string, Tensor>> experts) =>
        Assert.ThrowsExactly<MergeInputException>(() =>
            new InMemoryMergeDriver().Merge(new TiesMerge(), ReferenceModel.BaseModel(model), experts, expertNames: ExpertNames));
}
