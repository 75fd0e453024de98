using Microsoft.ML.ModelMerging.Onnx;
using Microsoft.ML.ModelMerging.Onnx.Proto;
using Microsoft.ML.ModelMerging.Tests.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Onnx;

[TestClass]
public sealed class OnnxGraphBuilderTests
{
    /// <summary>y = ReduceMean(Relu(x)·c, axis 1) with a symbolic batch: exercises initializers, attributes and the opset-dependent reduction form.</summary>
    private static OnnxGraphBuilder SmallGraph(int opset)
    {
        var g = new OnnxGraphBuilder("small", opset);
        string x = g.AddInput("x", OnnxElementType.Float, OnnxDimension.Batch, 4);
        string c = g.Constant("c", [1f, 2f, 3f, 4f]);
        string y = g.ReduceMean(g.Mul(g.Relu(x), c), [1], keepDims: false);
        g.AddOutput(y, "y", OnnxElementType.Float, OnnxDimension.Batch);
        return g;
    }

    public static IEnumerable<object[]> Opsets => Enumerable.Range(OnnxOpset.Minimum, OnnxOpset.Maximum - OnnxOpset.Minimum + 1).Select(o => new object[] { o });

    [TestMethod]
    [DynamicData(nameof(Opsets))]
    public void EverySupportedOpsetLoadsAndRunsInOnnxRuntime(int opset)
    {
        using var scope = NewDisposeScope();
        byte[] bytes = SmallGraph(opset).ToByteArray();
        using var runner = new OnnxRuntimeRunner(bytes);
        Tensor x = tensor(new float[] { -1, 2, -3, 4, 5, 6, 7, -8, 0, 0, 0, 1 }, [3, 4]);

        Tensor y = runner.Run("x", x)["y"];

        // Relu(x)·[1,2,3,4] averaged over 4: (0+4+0+16)/4, (5+12+21+0)/4, (0+0+0+4)/4.
        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(y, tensor(new float[] { 5, 9.5f, 1 })));
        var model = ModelProto.Parser.ParseFrom(bytes);
        Assert.AreEqual(OnnxOpset.IrVersionFor(opset), model.IrVersion);
        Assert.AreEqual(opset, model.OpsetImport.Single().Version);
    }

    [TestMethod]
    public void OpsetsOutsideTheSupportedRangeAreRefused()
    {
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new OnnxGraphBuilder("g", 16));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new OnnxGraphBuilder("g", 27));
    }

    [TestMethod]
    public void DerivedNamesAreScopedAndMadeUnique()
    {
        var g = new OnnxGraphBuilder("names");
        string x = g.AddInput("x", OnnxElementType.Float, 2);
        string a, b, c;
        using (g.Scope("block0"))
        {
            using (g.Scope("mlp"))
            {
                a = g.Relu(x);
            }

            b = g.Relu(x);
            c = g.Relu(x);
        }

        string d = g.Relu(x);
        string e = g.UniqueName("Relu");

        CollectionAssert.AreEqual(new[] { "block0/mlp/Relu", "block0/Relu", "block0/Relu_1", "Relu", "Relu_1" }, new[] { a, b, c, d, e });
        Assert.IsTrue(g.HasValue("block0/Relu_1"));
    }

    [TestMethod]
    public void TakenExactNamesAndUndefinedInputsAreErrors()
    {
        using var scope = NewDisposeScope();
        var g = new OnnxGraphBuilder("errors");
        string x = g.AddInput("x", OnnxElementType.Float, 2);
        g.AddInitializer("w", ones(2));

        Assert.ThrowsExactly<ArgumentException>(() => g.AddInput("x", OnnxElementType.Float, 2));
        Assert.ThrowsExactly<ArgumentException>(() => g.AddInitializer("w", ones(2)));
        var undefined = Assert.ThrowsExactly<ArgumentException>(() => g.Add(x, "nowhere"));
        StringAssert.Contains(undefined.Message, "'nowhere' is not defined");
        Assert.ThrowsExactly<InvalidOperationException>(() => g.ToByteArray());   // no outputs yet
        Assert.ThrowsExactly<ArgumentException>(() => g.AddInitializer("ints", arange(3)));
        Assert.ThrowsExactly<InvalidOperationException>(() => g.Node("FusedMatMul", [x, x], 1, domain: "com.microsoft"));
    }

    [TestMethod]
    public void EqualConstantsAreStoredOnce()
    {
        var g = new OnnxGraphBuilder("constants");
        string a = g.Constant("shape", [0L, 4]);
        string b = g.Constant("other", [0L, 4]);
        string c = g.Constant("shape", [0L, 4], [1, 2]);
        string d = g.Scalar("s", 1f);
        string e = g.Scalar("s", -0f);

        Assert.AreEqual(a, b);
        Assert.AreNotEqual(a, c);
        Assert.AreNotEqual(d, e);
        Assert.AreEqual(4, g.InitializerCount);
        Assert.AreEqual(16 + 16 + 4 + 4, g.InitializerBytes);
    }

    [TestMethod]
    public void Float16InitializersAreCastToFloat32InTheGraph()
    {
        using var scope = NewDisposeScope();
        var g = new OnnxGraphBuilder("half");
        string x = g.AddInput("x", OnnxElementType.Float, OnnxDimension.Batch, 3);
        Tensor w = tensor(new float[] { 1f / 3, -2.5e-3f, 1000.1f });
        string value = g.AddInitializer("w", w, OnnxWeightPrecision.Float16);
        g.AddOutput(g.Mul(x, value), "y", OnnxElementType.Float, OnnxDimension.Batch, 3);

        Assert.AreEqual("w.float32", value);
        Assert.AreEqual(6, g.InitializerBytes);
        var model = ModelProto.Parser.ParseFrom(g.ToByteArray());
        Assert.AreEqual((int)OnnxElementType.Float16, model.Graph.Initializer.Single().DataType);
        using var runner = new OnnxRuntimeRunner(g.ToByteArray());
        Tensor y = runner.Run("x", ones(2, 3))["y"];

        Tensor expected = w.to(ScalarType.Float16).to(ScalarType.Float32).expand(2, 3);
        Assert.AreEqual(0.0, ModelTestData.MaxAbsDiff(y, expected));
        Assert.AreNotEqual(0.0, ModelTestData.MaxAbsDiff(y, w.expand(2, 3)));
    }

    [TestMethod]
    public void Float16OverflowIsRefused()
    {
        using var scope = NewDisposeScope();
        var g = new OnnxGraphBuilder("overflow");
        var error = Assert.ThrowsExactly<ArgumentException>(() => g.AddInitializer("big", tensor(new float[] { 1, 70000 }), OnnxWeightPrecision.Float16));
        StringAssert.Contains(error.Message, "'big' has 1 finite value(s) beyond float16's range");
    }

    [TestMethod]
    public void MetadataIsWrittenSortedAndReadByOnnxRuntime()
    {
        var g = SmallGraph(OnnxOpset.Default);
        g.SetMetadata("zeta", "last");
        g.SetMetadata("alpha", "first");
        g.SetMetadata("zeta", "replaced");

        byte[] bytes = g.ToByteArray();

        var model = ModelProto.Parser.ParseFrom(bytes);
        CollectionAssert.AreEqual(new[] { "alpha", "zeta" }, model.MetadataProps.Select(p => p.Key).ToArray());
        using var runner = new OnnxRuntimeRunner(bytes);
        Assert.AreEqual("replaced", runner.Session.ModelMetadata.CustomMetadataMap["zeta"]);
        Assert.AreEqual("Microsoft.ML.ModelMerging", runner.Session.ModelMetadata.ProducerName);
        Assert.AreEqual("small", runner.Session.ModelMetadata.GraphName);
    }

    [TestMethod]
    public void TheSameCallsGiveTheSameBytes()
    {
        CollectionAssert.AreEqual(SmallGraph(20).ToByteArray(), SmallGraph(20).ToByteArray());
    }

    [TestMethod]
    public void SaveRenamesACompleteFileIntoPlace()
    {
        using var dir = new TempDirectory();
        string path = dir.File("sub/model.onnx");
        File.WriteAllText(dir.File("placeholder"), "");

        long length = SmallGraph(OnnxOpset.Default).Save(path);

        CollectionAssert.AreEqual(SmallGraph(OnnxOpset.Default).ToByteArray(), File.ReadAllBytes(path));
        Assert.AreEqual(new FileInfo(path).Length, length);
        Assert.IsEmpty(Directory.GetFiles(dir.File("sub"), "*.partial", SearchOption.AllDirectories).Concat(Directory.GetFiles(dir.File("sub"), ".*")));

        var empty = new OnnxGraphBuilder("no outputs");
        Assert.ThrowsExactly<InvalidOperationException>(() => empty.Save(path));
        CollectionAssert.AreEqual(SmallGraph(OnnxOpset.Default).ToByteArray(), File.ReadAllBytes(path));
    }
}
