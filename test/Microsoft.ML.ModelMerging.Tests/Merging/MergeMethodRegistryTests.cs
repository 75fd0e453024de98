using Microsoft.ML.ModelMerging.Merging;

namespace Microsoft.ML.ModelMerging.Tests.Merging;

[TestClass]
public sealed class MergeMethodRegistryTests
{
    [TestMethod]
    public void DefaultRegistryHoldsEveryWeightOnlyMethod()
    {
        CollectionAssert.AreEqual(
            new[] { "simple-average", "task-arithmetic", "ties", "dare", "tall-masks", "consensus", "emr" },
            MergeMethodRegistry.Default.Methods.Select(m => m.Name).ToArray());

        foreach (var descriptor in MergeMethodRegistry.Default.Methods)
        {
            Assert.AreEqual(descriptor.Name, descriptor.Create().Name);
        }
    }

    [TestMethod]
    public void ListingShowsParametersWithDefaultsAndRanges()
    {
        string listing = MergeMethodRegistry.Default.Describe();
        Assert.Contains("ties: TIES-Merging", listing);
        Assert.Contains("keep = 0.2", listing);
        Assert.Contains("number in (0, 1]", listing);
        Assert.Contains("trim = global", listing);
        Assert.Contains("one of: global, per-tensor", listing);
        Assert.Contains("drop-rate = 0.5", listing);
        Assert.Contains("number in [0, 1)", listing);
        Assert.Contains("min-tasks = 2", listing);
        Assert.Contains("tall-lambda = 0.4", listing);
        Assert.Contains("one per expert separated by commas", listing);
    }

    [TestMethod]
    public void ParametersAreParsedCaseInsensitivelyAndApplied()
    {
        var method = (TiesMerge)MergeMethodRegistry.Default.Create("TIES", MergeParameters.Parse("Keep = 0.35", "TRIM=Per-Tensor", "merge-func=mean", "lambda=1e-1"));
        Assert.AreEqual(0.35, method.Keep);
        Assert.AreEqual(TiesTrimScope.PerTensor, method.Trim);
        Assert.AreEqual(TiesMergeFunction.Mean, method.MergeFunction);
        Assert.AreEqual(0.1, method.Lambda);

        var dare = (DareMerge)MergeMethodRegistry.Default.Create("dare", MergeParameters.Parse("drop-rate=0.9", "seed=-12"));
        Assert.AreEqual(0.9, dare.DropRate);
        Assert.AreEqual(-12L, dare.Seed);
        Assert.IsInstanceOfType<TaskArithmeticMerge>(dare.Then);

        var tall = (TallMasksMerge)MergeMethodRegistry.Default.Create("tall-masks", MergeParameters.Parse("tall-lambda=0.2, 0.4,0.6"));
        CollectionAssert.AreEqual(new[] { 0.2, 0.4, 0.6 }, tall.TallLambdas.ToArray());
    }

    [TestMethod]
    public void ParametersCanComeFromAConfigDictionary()
    {
        var parameters = new MergeParameters(new Dictionary<string, string> { ["lambda"] = "0.5" });
        Assert.AreEqual(0.5, ((TaskArithmeticMerge)MergeMethodRegistry.Default.Create("task-arithmetic", parameters)).Lambda);
    }

    [TestMethod]
    [DataRow("ties", "keep=0", "Parameter 'keep' of merge method 'ties' must be a number in (0, 1]; got '0'.")]
    [DataRow("ties", "keep=1.5", "Parameter 'keep' of merge method 'ties' must be a number in (0, 1]; got '1.5'.")]
    [DataRow("ties", "keep=abc", "Parameter 'keep' of merge method 'ties' must be a number in (0, 1]; got 'abc'.")]
    [DataRow("ties", "lambda=NaN", "Parameter 'lambda' of merge method 'ties' must be a number; got 'NaN'.")]
    [DataRow("ties", "trim=layer", "Parameter 'trim' of merge method 'ties' must be one of: global, per-tensor; got 'layer'.")]
    [DataRow("ties", "density=0.2", "Unknown parameter 'density' for merge method 'ties' (known: lambda, keep, trim, merge-func).")]
    [DataRow("emr", "lambda=1", "Unknown parameter 'lambda' for merge method 'emr' (it takes none).")]
    [DataRow("dare", "seed=1.5", "Parameter 'seed' of merge method 'dare' must be an integer; got '1.5'.")]
    [DataRow("dare", "drop-rate=1", "Parameter 'drop-rate' of merge method 'dare' must be a number in [0, 1); got '1'.")]
    [DataRow("consensus", "min-tasks=-1", "Parameter 'min-tasks' of merge method 'consensus' must be an integer >= 0; got '-1'.")]
    [DataRow("tall-masks", "tall-lambda=0.2,x", "Parameter 'tall-lambda' of merge method 'tall-masks' must be a number >= 0, or one per expert separated by commas; got '0.2,x'.")]
    public void InvalidParametersAreRejectedWithAClearMessage(string method, string assignment, string expectedMessage)
    {
        var error = Assert.ThrowsExactly<ArgumentException>(() => MergeMethodRegistry.Default.Create(method, MergeParameters.Parse(assignment)));
        // .NET appends " (Parameter 'x')" when ParamName is set; a refused value names its merge parameter there.
        Assert.AreEqual(expectedMessage, error.ParamName is null ? error.Message : error.Message.Replace($" (Parameter '{error.ParamName}')", "", StringComparison.Ordinal));
        if (expectedMessage.StartsWith("Parameter '", StringComparison.Ordinal))
        {
            Assert.AreEqual(assignment.Split('=')[0], error.ParamName);
        }
    }

    [TestMethod]
    public void MalformedAssignmentsAndUnknownMethodsAreRejected()
    {
        Assert.AreEqual(
            "Merge parameter 'keep0.2' is not of the form name=value. (Parameter 'assignments')",
            Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("keep0.2")).Message);
        Assert.AreEqual(
            "Merge parameter 'KEEP' is given more than once. (Parameter 'values')",
            Assert.ThrowsExactly<ArgumentException>(() => MergeParameters.Parse("keep=0.2", "KEEP=0.3")).Message);
        Assert.AreEqual(
            "Unknown merge method 'fisher' (known: simple-average, task-arithmetic, ties, dare, tall-masks, consensus, emr). (Parameter 'name')",
            Assert.ThrowsExactly<ArgumentException>(() => MergeMethodRegistry.Default.Create("fisher")).Message);
    }

    [TestMethod]
    public void RegistryCanBeExtendedButNotWithADuplicateName()
    {
        var extra = new MergeMethodDescriptor("my-average", "custom", [], _ => new SimpleAverageMerge());
        var registry = MergeMethodRegistry.Default.With(extra);
        Assert.AreSame(extra, registry.Get("my-average"));
        Assert.IsFalse(MergeMethodRegistry.Default.TryGet("my-average", out _));
        Assert.ThrowsExactly<ArgumentException>(() => registry.With(extra));
    }
}
