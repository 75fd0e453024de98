using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Microsoft.ML.ModelMerging.Tests.Architecture;

/// <summary>
/// The library makes no TorchSharp <c>Scalar</c> that nothing keeps alive during the native call (see
/// <c>TensorMath/ScalarOperands</c>: a collection on another thread can finalise it while libtorch reads it). The source is
/// compiled with Roslyn and every form that makes such a temporary is reported with its file and line.
/// </summary>
[TestClass]
public sealed class ScalarOperandTests
{
    private static string Root
    {
        get
        {
            var directory = new DirectoryInfo(AppContext.BaseDirectory);
            while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Microsoft.ML.ModelMerging.sln"))) directory = directory.Parent;
            return directory?.FullName ?? throw new InvalidOperationException("The repository root is not above the test binaries.");
        }
    }

    /// <summary>Every place in <paramref name="project"/>'s sources that makes a Scalar temporary.</summary>
    private static List<string> Temporaries(string project)
    {
        string folder = Path.Combine(Root, "src", project);
        // The project's sources plus what the build generated for it (global usings, the ONNX protobuf classes).
        var files = Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") &&
                        (!f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") || f.EndsWith(".g.cs", StringComparison.Ordinal) || f.Contains($"{Path.DirectorySeparatorChar}Proto{Path.DirectorySeparatorChar}")))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") || !Directory.Exists(Path.Combine(folder, "obj", "Release")))
            .ToList();
        var trees = files.Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), new CSharpParseOptions(LanguageVersion.Preview), path: f)).ToList();
        var references = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Concat(Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll"))
            .Where(p => !Path.GetFileName(p).StartsWith(project + ".", StringComparison.Ordinal))
            .DistinctBy(Path.GetFileName)
            .Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create("scan", trees, references,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, allowUnsafe: true, nullableContextOptions: NullableContextOptions.Enable));
        var scalar = compilation.GetTypeByMetadataName("TorchSharp.Scalar");
        Assert.IsNotNull(scalar, "TorchSharp is referenced");

        var found = new List<string>();
        foreach (var tree in trees.Where(t => !t.FilePath.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")))
        {
            var model = compilation.GetSemanticModel(tree);
            void Report(SyntaxNode node, string what)
            {
                var line = tree.GetLineSpan(node.Span).StartLinePosition.Line + 1;
                found.Add($"{Path.GetRelativePath(folder, tree.FilePath)}:{line}: {what}: {node}");
            }

            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                if (node is ExpressionSyntax expression)
                {
                    var conversion = model.GetConversion(expression);
                    if (conversion.IsUserDefined && SymbolEqualityComparer.Default.Equals(conversion.MethodSymbol?.ReturnType, scalar))
                    {
                        Report(node, "implicit conversion to Scalar");
                    }
                }

                if (model.GetSymbolInfo(node).Symbol is not IMethodSymbol method || method.ContainingType?.ToDisplayString() != "TorchSharp.torch.Tensor") continue;
                if (node is BinaryExpressionSyntax or AssignmentExpressionSyntax && method.MethodKind == MethodKind.UserDefinedOperator)
                {
                    if (method.Parameters.Any(p => p.Type.SpecialType != SpecialType.None)) Report(node, "operator with a number (TorchSharp converts it inside)");
                    else if (method.Name == "op_Addition") Report(node, "tensor + tensor (TorchSharp's add makes alpha = 1)");
                }
                else if (node is InvocationExpressionSyntax)
                {
                    if (method.Name is "add" or "add_" && method.Parameters.Length == 1) Report(node, $"{method.Name} without alpha (TorchSharp makes alpha = 1)");
                    else if (method.Name is "square" or "square_") Report(node, $"{method.Name} (TorchSharp's pow(2))");
                }
            }
        }

        return found;
    }

    [TestMethod]
    [DataRow("Microsoft.ML.ModelMerging")]
    [DataRow("Microsoft.ML.ModelMerging.Cli")]
    public void NoScalarTemporaries(string project)
    {
        var found = Temporaries(project);
        Assert.IsEmpty(found, "use TensorMath/ScalarOperands instead:\n" + string.Join("\n", found));
    }
}
