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
    private static string Root => RepositoryRoot.Path;

    /// <summary>
    /// TorchSharp members (any type, static or not) that turn a number into a Scalar inside TorchSharp, out of reach of the
    /// call site: <c>add</c> (alpha = 1), <c>square</c> (pow(2)), functional activations with number parameters, the norms,
    /// <c>normal</c>, <c>addcdiv</c> without a value.
    /// </summary>
    private static readonly HashSet<string> InternalScalarMembers = new(StringComparer.Ordinal)
    {
        "square", "square_", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "threshold", "threshold_", "softplus",
        "elu", "elu_", "celu", "celu_", "vector_norm", "matrix_norm", "normal", "normal_",
    };

    /// <summary>Compiler errors the scan tolerates: source-generated partial methods (regex) and obsolete-as-error members.</summary>
    private static readonly HashSet<string> ToleratedErrors = new(StringComparer.Ordinal) { "CS8795", "CS0619" };

    /// <summary>Every place in <paramref name="project"/>'s sources that makes a Scalar temporary.</summary>
    private static List<string> Temporaries(string project, string assemblyName, OutputKind kind)
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
        // Named as the real assembly, so the library's InternalsVisibleTo lets the CLI's calls bind as in the build.
        var compilation = CSharpCompilation.Create(assemblyName, trees, references,
            new CSharpCompilationOptions(kind, allowUnsafe: true, nullableContextOptions: NullableContextOptions.Enable));
        var scalar = compilation.GetTypeByMetadataName("TorchSharp.Scalar");
        Assert.IsNotNull(scalar, "TorchSharp is referenced");
        // A call that does not bind is a call the scan cannot see: the compilation must be clean but for the tolerated errors.
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error && !ToleratedErrors.Contains(d.Id)).Take(10).ToList();
        Assert.IsEmpty(errors, $"{project} does not compile for the scan:\n" + string.Join("\n", errors));

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

                if (model.GetSymbolInfo(node).Symbol is not IMethodSymbol method ||
                    method.ContainingNamespace?.ToDisplayString() is not { } ns || !ns.StartsWith("TorchSharp", StringComparison.Ordinal)) continue;
                // TorchSharp's optimisers convert their hyper-parameters to temporary scalars on every step.
                if (node is ObjectCreationExpressionSyntax or ImplicitObjectCreationExpressionSyntax or InvocationExpressionSyntax &&
                    (method.ContainingType?.ToDisplayString().StartsWith("TorchSharp.Modules.", StringComparison.Ordinal) == true && method.ContainingType.AllInterfaces.Any(i => i.Name == "IBetas") ||
                     method.ContainingType?.ToDisplayString() == "TorchSharp.torch.optim" && method.ReturnType.AllInterfaces.Any(i => i.Name == "IBetas") ||
                     method.ContainingType?.ToDisplayString() == "TorchSharp.torch.optim" && method.ReturnType.BaseType?.Name == "OptimizerHelper"))
                {
                    Report(node, "TorchSharp optimiser (its step makes scalar temporaries; use Training/AdamWOptimizer)");
                    continue;
                }
                if (node is InvocationExpressionSyntax)
                {
                    if (method.Name is "add" or "add_" && method.Parameters.Length == 1 + (method.IsStatic ? 1 : 0)) Report(node, $"{method.Name} without alpha (TorchSharp makes alpha = 1)");
                    else if (method.Name is "addcdiv" or "addcdiv_" && !method.Parameters.Any(p => p.Type.Equals(scalar, SymbolEqualityComparer.Default))) Report(node, $"{method.Name} without a value (TorchSharp makes value = 1)");
                    else if (InternalScalarMembers.Contains(method.Name)) Report(node, $"{method.Name} (TorchSharp turns its numbers into scalars inside)");
                }
                if (method.ContainingType?.ToDisplayString() != "TorchSharp.torch.Tensor") continue;
                if (node is BinaryExpressionSyntax or AssignmentExpressionSyntax && method.MethodKind == MethodKind.UserDefinedOperator)
                {
                    if (method.Parameters.Any(p => p.Type.Name != "Tensor")) Report(node, "operator with a number or a Scalar (TorchSharp converts it, or makes alpha = 1, inside)");
                    else if (method.Name == "op_Addition") Report(node, "tensor + tensor (TorchSharp's add makes alpha = 1)");
                }
            }
        }

        return found;
    }

    [TestMethod]
    [DataRow("Microsoft.ML.ModelMerging", "Microsoft.ML.ModelMerging", OutputKind.DynamicallyLinkedLibrary)]
    [DataRow("Microsoft.ML.ModelMerging.Cli", "mlmerge", OutputKind.ConsoleApplication)]
    public void NoScalarTemporaries(string project, string assemblyName, OutputKind kind)
    {
        var found = Temporaries(project, assemblyName, kind);
        Assert.IsEmpty(found, "use TensorMath/ScalarOperands instead:\n" + string.Join("\n", found));
    }
}
