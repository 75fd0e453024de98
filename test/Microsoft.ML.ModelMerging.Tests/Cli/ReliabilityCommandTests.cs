using System.Diagnostics;
using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Tests.Cli;

/// <summary>Issue 17 items 1, 5, 6 and issue 16 item 6 as a user meets them on the command line.</summary>
[TestClass]
public sealed class ReliabilityCommandTests
{
    private static (string Base, string Expert) Models(TempDirectory dir, int tensors = 2, int size = 16)
    {
        var g = new torch.Generator(5);
        Dictionary<string, torch.Tensor> Model() =>
            Enumerable.Range(0, tensors).ToDictionary(i => $"blocks.{i}.weight", _ => torch.randn([size], generator: g));
        SafeTensorsWriter.Save(dir.File("base.safetensors"), Model(), new Dictionary<string, string> { ["note"] = "say \"hi\"" });
        SafeTensorsWriter.Save(dir.File("expert.safetensors"), Model());
        return (dir.File("base.safetensors"), dir.File("expert.safetensors"));
    }

    [TestMethod]
    public void OutputNamingAnInputIsRefusedAndTheInputSurvives()
    {
        using var dir = new TempDirectory();
        var (baseModel, expert) = Models(dir);
        byte[] before = File.ReadAllBytes(baseModel);
        string respelled = Path.Combine(dir.Path, ".", "base.safetensors");
        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", baseModel, "--expert", expert, "--out", respelled);
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "would destroy that input");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(baseModel));
    }

    [TestMethod]
    public void OutInAMissingDirectoryIsCreatedAndSaid()
    {
        using var dir = new TempDirectory();
        var (baseModel, expert) = Models(dir);
        string output = Path.Combine(dir.Path, "new", "folder", "merged.safetensors");
        var (exit, stdout, _) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", baseModel, "--expert", expert, "--out", output);
        Assert.AreEqual(0, exit);
        StringAssert.Contains(stdout, $"created directory {Path.Combine(dir.Path, "new", "folder")}");
        Assert.IsTrue(File.Exists(output));
    }

    [TestMethod]
    public void ConsensusMinTasksAboveTheExpertCountFails()
    {
        using var dir = new TempDirectory();
        var (baseModel, expert) = Models(dir);
        var (exit, _, error) = CliRunner.Run("merge", "--method", "consensus", "--min-tasks", "2", "--base", baseModel, "--expert", expert, "--out", dir.File("m.safetensors"));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "min-tasks 2 is more than the 1 expert(s)");
        Assert.IsFalse(File.Exists(dir.File("m.safetensors")));
    }

    [TestMethod]
    public void InspectJsonWritesPlainQuotes()
    {
        using var dir = new TempDirectory();
        var (baseModel, _) = Models(dir);
        var (exit, json, _) = CliRunner.Run("inspect", baseModel, "--json");
        Assert.AreEqual(0, exit);
        StringAssert.Contains(json, "\"note\": \"say \\\"hi\\\"\"");
        Assert.DoesNotContain("\\u0022", json);
    }

    [TestMethod]
    public void ErrorsDoNotNameACSharpParameter()
    {
        using var dir = new TempDirectory();
        var (baseModel, expert) = Models(dir);
        var (exit, _, error) = CliRunner.Run("merge", "--method", "task-arithmetic", "--base", baseModel, "--expert", expert, "--out", "");
        Assert.AreEqual(1, exit);
        Assert.DoesNotContain("(Parameter '", error);
        StringAssert.StartsWith(error, "error: ");
    }

    /// <summary>The built mlmerge next to this test build (same configuration), run as its own process so it can be signalled.</summary>
    internal static string MlmergeDll()
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // bin/<Configuration>/net10.0/
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "src", "Microsoft.ML.ModelMerging.Cli", "bin", configuration, "net10.0", "mlmerge.dll");
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Inconclusive("mlmerge.dll is not built next to the tests.");
        return "";
    }

    [TestMethod]
    [DataRow("TERM", 143, 1)]
    [DataRow("INT", 130, 1)]
    [DataRow("INT", 130, 2)]   // delivered twice at once, as `timeout -s INT` does: still one clean cancellation
    public void SignalCancelsCleanly(string signal, int expectedExit, int deliveries)
    {
        if (OperatingSystem.IsWindows()) Assert.Inconclusive("POSIX signals");
        using var dir = new TempDirectory();
        // Large enough that the merge (DARE, through libtorch) is still writing when the signal arrives.
        var (baseModel, expert) = Models(dir, tensors: 24, size: 1 << 20);
        // Into folders that do not exist yet: the merge creates them, and removes them again when it is cancelled.
        string folder = Path.Combine(dir.Path, "out", "new");
        string output = Path.Combine(folder, "merged.safetensors");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in new[] { MlmergeDll(), "merge", "--method", "dare", "--base", baseModel, "--expert", expert, "--out", output }) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        // Signal once the temporary output exists: the merge is under way.
        while (!process.HasExited && (!Directory.Exists(folder) || Directory.GetFiles(folder, "*.partial").Length == 0)) Thread.Sleep(2);
        if (process.HasExited) Assert.Inconclusive("the merge ended before it could be signalled");
        for (int i = 0; i < deliveries; i++)
        {
            using var kill = Process.Start("kill", [$"-{signal}", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
            kill.WaitForExit();
        }
        process.WaitForExit();
        string error = stderr.Result;
        _ = stdout.Result;
        if (process.ExitCode == 0) Assert.Inconclusive("the merge finished before the signal was handled");
        Assert.AreEqual(expectedExit, process.ExitCode, error);
        StringAssert.Contains(error, $"cancelled by SIG{signal}");
        Assert.IsFalse(Directory.Exists(Path.Combine(dir.Path, "out")), "no output, no temporary file and no folder the merge created is left");
    }
}
