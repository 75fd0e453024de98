using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Runtime;

[TestClass]
public sealed class TorchSharpLoadsTests
{
    [TestMethod]
    public void NativeLibraryLoadsAndAutogradWorks()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new float[] { 1, 2, 3 }, requires_grad: true);
        var y = (x * x).sum();
        y.backward();
        CollectionAssert.AreEqual(new float[] { 2, 4, 6 }, x.grad!.data<float>().ToArray());
    }
}
