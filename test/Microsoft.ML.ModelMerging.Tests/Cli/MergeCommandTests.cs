using System.Globalization;
using Microsoft.ML.ModelMerging.Checkpoints;
using Microsoft.ML.ModelMerging.Cli;
using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.TensorMath;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Cli;

[TestClass]
public sealed class MergeCommandTests
{
    private static readonly string[] MergedNames = ["blocks.0.bias", "blocks.0.weight", "blocks.1.weight", "embed"];

    private static (int Exit, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = MlmergeCommand.Run(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }

    /// <summary>A base and three experts (base + noise): float tensors, a per-model head and integer position ids.</summary>
    private static Models WriteModels(TempDirectory dir)
    {
        var generator = new Generator(7);
        var shapes = new Dictionary<string, long[]>
        {
            ["blocks.0.weight"] = [6, 4], ["blocks.0.bias"] = [6], ["blocks.1.weight"] = [4, 6], ["embed"] = [3, 4], ["head.weight"] = [2, 4],
        };
        Dictionary<string, Tensor> Model(Dictionary<string, Tensor>? from)
        {
            var model = shapes.ToDictionary(kv => kv.Key, kv => from is null
                ? randn(kv.Value, generator: generator)
                : from[kv.Key].Plus(randn(kv.Value, generator: generator).Times(0.1)));
            model["position_ids"] = arange(0L, 3L);
            return model;
        }

        var baseModel = Model(null);
        var experts = Enumerable.Range(0, 3).Select(_ => Model(baseModel)).ToList();
        SafeTensorsWriter.Save(dir.File("base.safetensors"), baseModel);
        for (int i = 0; i < experts.Count; i++)
        {
            SafeTensorsWriter.Save(dir.File($"e{i}.safetensors"), experts[i]);
        }

        return new Models(dir.File("base.safetensors"), [.. Enumerable.Range(0, 3).Select(i => dir.File($"e{i}.safetensors"))],
            ToDoubles(baseModel), [.. experts.Select(ToDoubles)]);
    }

    private static Dictionary<string, double[]> ToDoubles(Dictionary<string, Tensor> model) =>
        model.ToDictionary(kv => kv.Key, kv =>
        {
            using var asDouble = kv.Value.to_type(ScalarType.Float64);
            return asDouble.data<double>().ToArray();
        });

    private sealed record Models(string Base, string[] Experts, Dictionary<string, double[]> BaseValues, List<Dictionary<string, double[]>> ExpertValues)
    {
        public string[] ExpertArgs => [.. Experts.SelectMany(e => new[] { "--expert", e })];
    }

    private static float[] ReadFloats(Checkpoint checkpoint, string name)
    {
        using var tensor = checkpoint.ReadTensor(name);
        return tensor.data<float>().ToArray();
    }

    /// <summary>θ0 + λ Σ_i w_i (θ_i − θ0), computed in float64 from the stored values.</summary>
    private static double[] TaskArithmetic(Models models, string name, double lambda, double[] weights)
    {
        var theta0 = models.BaseValues[name];
        var result = new double[theta0.Length];
        for (int j = 0; j < theta0.Length; j++)
        {
            double sum = 0;
            for (int i = 0; i < weights.Length; i++)
            {
                sum += weights[i] * (models.ExpertValues[i][name][j] - theta0[j]);
            }

            result[j] = theta0[j] + (lambda * sum);
        }

        return result;
    }

    private static void AssertClose(double[] expected, float[] actual, string name)
    {
        Assert.HasCount(expected.Length, actual, name);
        for (int j = 0; j < expected.Length; j++)
        {
            Assert.AreEqual(expected[j], actual[j], 1e-5 * Math.Max(1, Math.Abs(expected[j])), $"{name}[{j}]");
        }
    }

    [TestMethod]
    public void OptionsYamlConfigAndJsonConfigGiveByteIdenticalOutputs()
    {
        using var dir = new TempDirectory();
        var models = WriteModels(dir);
        var (exit, output, error) = Run([
            "merge", "--method", "ties", "--base", models.Base, .. models.ExpertArgs,
            "--expert-weight", "1", "--expert-weight", "0.5", "--expert-weight", "2",
            "--keep", "0.5", "--param", "merge-func=mean", "--lambda", "0.7",
            "--dtype", "bf16", "--exclude", @"^blocks\.1\.", "--out", dir.File("options.safetensors")]);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "ties: 3 tensors merged, 3 copied from the base, 3 pass(es)");

        // Config files live in a sub-folder: their relative paths are relative to the file, not to the working directory.
        Directory.CreateDirectory(dir.File("configs"));
        File.WriteAllText(dir.File("configs/job.yaml"), """
            # the same job as the options above
            method: ties
            base: ../base.safetensors
            experts:
              - path: ../e0.safetensors
              - path: '../e1.safetensors'   # half weight
                weight: 0.5
              - {path: "../e2.safetensors", weight: 2}
            out: ../yaml.safetensors
            parameters: {keep: 0.5, merge-func: mean, lambda: 0.7}
            dtype: bf16
            exclude: ['^blocks\.1\.']
            """);
        File.WriteAllText(dir.File("configs/job.json"), """
            {
              "method": "ties",
              "base": "../base.safetensors",
              "experts": [ "../e0.safetensors", { "path": "../e1.safetensors", "weight": 0.5 }, { "path": "../e2.safetensors", "weight": 2 } ],
              "output": "../json.safetensors",
              "parameters": { "keep": 0.5, "merge-func": "mean", "lambda": 0.7 },
              "dtype": "bf16",
              "exclude": "^blocks\\.1\\."
            }
            """);
        foreach (string config in new[] { "job.yaml", "job.json" })
        {
            var (configExit, _, configError) = Run("merge", "--config", dir.File("configs/" + config));
            Assert.AreEqual(0, configExit, configError);
        }

        byte[] expected = File.ReadAllBytes(dir.File("options.safetensors"));
        CollectionAssert.AreEqual(expected, File.ReadAllBytes(dir.File("yaml.safetensors")), "YAML config");
        CollectionAssert.AreEqual(expected, File.ReadAllBytes(dir.File("json.safetensors")), "JSON config");

        // And the bytes are the library's merge with those settings, rounded to bf16.
        using var merged = Checkpoint.Open(dir.File("options.safetensors"));
        Assert.AreEqual(SafeTensorsDType.BF16, merged.GetEntry("embed").DType);
        using var baseCheckpoint = Checkpoint.Open(models.Base);
        var experts = models.Experts.Select(Checkpoint.Open).ToList();
        var reference = new InMemoryMergeDriver(new TensorFilter([@"^blocks\.1\."])).Merge(
            MergeMethodRegistry.Default.Create("ties", MergeParameters.Parse("keep=0.5", "merge-func=mean", "lambda=0.7")),
            baseCheckpoint.ReadAll(), [.. experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.ReadAll())], [1, 0.5, 2]);
        experts.ForEach(e => e.Dispose());
        foreach (string name in MergedNames.Append("head.weight"))
        {
            using var rounded = reference.Merged[name].to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(rounded.data<float>().ToArray(), ReadFloats(merged, name), name);
        }
    }

    [TestMethod]
    public void ExpertWeightsFromOptionsAndFromConfigScaleEachTaskVector()
    {
        using var dir = new TempDirectory();
        var models = WriteModels(dir);
        double[] weights = [0.25, -1, 3];
        var (exit, _, error) = Run([
            "merge", "--method", "task-arithmetic", "--lambda", "0.5", "--base", models.Base, .. models.ExpertArgs,
            .. weights.SelectMany(w => new[] { "--expert-weight", w.ToString(CultureInfo.InvariantCulture) }),
            "--out", dir.File("options.safetensors")]);
        Assert.AreEqual(0, exit, error);
        File.WriteAllText(dir.File("job.yml"), $"""
            method: task-arithmetic
            parameters:
              lambda: 0.5
            base: base.safetensors
            experts:
            - path: e0.safetensors
              weight: 0.25
            - path: e1.safetensors
              weight: -1
            - path: e2.safetensors
              weight: 3
            out: config.safetensors
            """);
        (exit, _, error) = Run("merge", "--config", dir.File("job.yml"));
        Assert.AreEqual(0, exit, error);

        foreach (string file in new[] { "options.safetensors", "config.safetensors" })
        {
            using var merged = Checkpoint.Open(dir.File(file));
            foreach (string name in MergedNames)
            {
                AssertClose(TaskArithmetic(models, name, 0.5, weights), ReadFloats(merged, name), $"{file} {name}");
            }

            // The head and the integer position ids come from the base untouched.
            AssertClose(models.BaseValues["head.weight"], ReadFloats(merged, "head.weight"), "head.weight");
            using var positions = merged.ReadTensor("position_ids");
            CollectionAssert.AreEqual(new long[] { 0, 1, 2 }, positions.data<long>().ToArray());
            StringAssert.Contains(merged.Metadata[StreamingMergeDriver.ParametersMetadataKey], "\"expert_weights\":\"0.25,-1,3\"");
        }
    }

    [TestMethod]
    public void ListShowsEveryMethodWithItsParametersAndDefaults()
    {
        var (exit, output, error) = Run("merge", "--list");
        Assert.AreEqual(0, exit, error);
        var lines = output.Split('\n').Select(line => line.TrimEnd('\r')).ToList();

        // The defaults of DESIGN.md §3, each on its method's block; methods that give one model also merge LoRA adapters
        // on their factors.
        var expected = new Dictionary<string, string[]>
        {
            ["simple-average"] = ["adapter-space = delta"],
            ["task-arithmetic"] = ["lambda = 0.3", "adapter-space = delta"],
            ["ties"] = ["lambda = 0.3", "keep = 0.2", "trim = global", "merge-func = sum", "adapter-space = delta"],
            ["dare"] = ["drop-rate = 0.5", "seed = 0", "then = task-arithmetic", "lambda = 0.3", "keep = 0.2", "adapter-space = delta"],
            ["tall-masks"] = ["lambda = 0.3", "tall-lambda = 0.4"],
            ["consensus"] = ["lambda = 0.3", "tall-lambda = 0.4", "min-tasks = 2", "adapter-space = delta"],
            ["emr"] = ["(no parameters)"],
        };
        CollectionAssert.AreEquivalent(expected.Keys.ToArray(), MergeMethodRegistry.Default.Methods.Select(m => m.Name).ToArray());
        foreach (var method in MergeMethodRegistry.Default.Methods)
        {
            int start = lines.FindIndex(line => line.StartsWith(method.Name + ": ", StringComparison.Ordinal));
            Assert.IsGreaterThanOrEqualTo(0, start, $"{method.Name} is listed");
            var block = lines.Skip(start + 1).TakeWhile(line => line.StartsWith("    ", StringComparison.Ordinal)).Select(line => line.Trim()).ToList();
            foreach (string parameter in expected[method.Name])
            {
                Assert.IsTrue(block.Any(line => line.StartsWith(parameter, StringComparison.Ordinal)), $"{method.Name}: '{parameter}' in {string.Join(" | ", block)}");
            }

            // Every declared parameter, with its default and what it accepts.
            foreach (var spec in method.Parameters)
            {
                Assert.IsTrue(block.Any(line => line.StartsWith($"{spec.Name} = {spec.DefaultValue}", StringComparison.Ordinal) && line.Contains(spec.AcceptedValues, StringComparison.Ordinal)),
                    $"{method.Name}: {spec.Name}");
            }
        }
    }

    [TestMethod]
    public void Bf16ShardsAndExclusionsFromTheCommandLine()
    {
        using var dir = new TempDirectory();
        var models = WriteModels(dir);
        var (exit, _, error) = Run(["merge", "--method", "task-arithmetic", "--base", models.Base, .. models.ExpertArgs, "--out", dir.File("full.safetensors")]);
        Assert.AreEqual(0, exit, error);
        (exit, var output, error) = Run([
            "merge", "--method", "task-arithmetic", "--base", models.Base, .. models.ExpertArgs,
            "--dtype", "bf16", "--shard-size", "100B", "--exclude", "^embed$", "--exclude", @"blocks\.1", "--out", dir.File("sharded")]);
        Assert.AreEqual(0, exit, error);
        StringAssert.Contains(output, "2 tensors merged, 4 copied from the base");

        using var full = Checkpoint.Open(dir.File("full.safetensors"));
        using var sharded = Checkpoint.Open(dir.File("sharded"));
        Assert.AreEqual(Path.Combine(dir.File("sharded"), Checkpoint.IndexFileName), sharded.Source);
        Assert.IsGreaterThan(1, sharded.Files.Count, "several shards");
        foreach (string file in sharded.Files)
        {
            // A shard exceeds the limit only when it holds a single tensor larger than the limit.
            using var shard = SafeTensorsFile.Open(file);
            Assert.IsTrue(shard.Tensors.Count == 1 || shard.Tensors.Sum(t => t.ByteLength) <= 100, file);
        }

        foreach (string name in new[] { "blocks.0.weight", "blocks.0.bias" })
        {
            Assert.AreEqual(SafeTensorsDType.BF16, sharded.GetEntry(name).DType);
            using var f32 = full.ReadTensor(name);
            using var rounded = f32.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(rounded.data<float>().ToArray(), ReadFloats(sharded, name), name);
        }

        foreach (string name in new[] { "embed", "blocks.1.weight", "head.weight" })
        {
            // Excluded: the base's values (rounded to the output dtype), not merged.
            using var baseValues = tensor(models.BaseValues[name]).to_type(ScalarType.Float32);
            using var rounded = baseValues.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(rounded.data<float>().ToArray(), ReadFloats(sharded, name), name);
        }

        Assert.AreEqual(SafeTensorsDType.I64, sharded.GetEntry("position_ids").DType);
    }

    [TestMethod]
    [DataRow("missing-method", "merge|--base|{base}|{experts}|--out|{out}", "error: --method is required (see --list).")]
    [DataRow("unknown-method", "merge|--method|tiez|--base|{base}|{experts}|--out|{out}", "error: Unknown merge method 'tiez' (known: simple-average, task-arithmetic, ties, dare, tall-masks, consensus, emr).")]
    [DataRow("unknown-parameter", "merge|--method|task-arithmetic|--param|keep=0.5|--base|{base}|{experts}|--out|{out}", "error: Unknown parameter 'keep' for merge method 'task-arithmetic' (known: lambda).")]
    [DataRow("unknown-shorthand", "merge|--method|simple-average|--lambda|2|--base|{base}|{experts}|--out|{out}", "error: Unknown parameter 'lambda' for merge method 'simple-average' (it takes none).")]
    [DataRow("out-of-range", "merge|--method|ties|--keep|1.5|--base|{base}|{experts}|--out|{out}", "error: Parameter 'keep' of merge method 'ties' must be a number in (0, 1]; got '1.5'.")]
    [DataRow("bad-choice", "merge|--method|ties|--trim|layer|--base|{base}|{experts}|--out|{out}", "error: Parameter 'trim' of merge method 'ties' must be one of: global, per-tensor; got 'layer'.")]
    [DataRow("weight-count", "merge|--method|task-arithmetic|--expert-weight|1|--expert-weight|2|--base|{base}|{experts}|--out|{out}", "error: 2 --expert-weight value(s) for 3 --expert(s).")]
    [DataRow("weight-not-finite", "merge|--method|task-arithmetic|--expert-weight|1|--expert-weight|NaN|--expert-weight|1|--base|{base}|{experts}|--out|{out}", "weights must be finite.")]
    [DataRow("weight-not-a-number", "merge|--method|task-arithmetic|--expert-weight|heavy|--base|{base}|{experts}|--out|{out}", "error: Cannot parse argument 'heavy' for option '--expert-weight'")]
    [DataRow("per-expert-parameter-count", "merge|--method|tall-masks|--param|tall-lambda=0.2,0.4|--base|{base}|{experts}|--out|{out}", "tall-lambda")]
    [DataRow("missing-expert-file", "merge|--method|ties|--base|{base}|--expert|{dir}/e0.safetensors|--expert|{dir}/nope.safetensors|--out|{out}", "error: Checkpoint not found: {dir}/nope.safetensors")]
    [DataRow("missing-base-file", "merge|--method|ties|--base|{dir}/nope.safetensors|{experts}|--out|{out}", "error: Checkpoint not found: {dir}/nope.safetensors")]
    [DataRow("no-expert", "merge|--method|ties|--base|{base}|--out|{out}", "error: A merge needs at least one expert.")]
    [DataRow("missing-out", "merge|--method|ties|--base|{base}|{experts}", "error: --out is required.")]
    [DataRow("bad-dtype", "merge|--method|ties|--base|{base}|{experts}|--dtype|f8|--out|{out}", "error: Unknown output dtype 'f8': expected f32, f16 or bf16.")]
    [DataRow("bad-shard-size", "merge|--method|ties|--base|{base}|{experts}|--shard-size|lots|--out|{out}", "error: Cannot read size 'lots'")]
    [DataRow("bad-exclude", "merge|--method|ties|--base|{base}|{experts}|--exclude|([|--out|{out}", "error: Exclusion pattern '([' is not a valid regular expression")]
    [DataRow("unknown-option", "merge|--method|ties|--bogus|--base|{base}|{experts}|--out|{out}", "error: Unrecognized command or argument '--bogus'. (see 'mlmerge merge --help')")]
    [DataRow("config-and-options", "merge|--config|{dir}/job.yaml|--expert|{dir}/e0.safetensors|--keep|0.5", "error: --config holds the whole job: do not also pass --expert, --keep.")]
    [DataRow("config-syntax", "merge|--config|{dir}/bad.yaml", "error: {dir}/bad.yaml: line 4, column 10: the '[' opened here is not closed")]
    [DataRow("config-unknown-setting", "merge|--config|{dir}/typo.yaml", "error: {dir}/typo.yaml: unknown setting 'lamda'")]
    [DataRow("config-missing", "merge|--config|{dir}/none.yaml", "none.yaml")]
    [DataRow("config-boolean", "merge|--config|{dir}/boolean.yaml", "error: {dir}/boolean.yaml: 'allow_missing' must be true or false, got 'sometimes'.")]
    [DataRow("config-expert-key", "merge|--config|{dir}/expert-key.yaml", "error: {dir}/expert-key.yaml: unknown expert setting 'wieght' (expected path and optionally weight).")]
    [DataRow("config-parameters", "merge|--config|{dir}/parameters.yaml", "error: {dir}/parameters.yaml: 'parameters' must be a mapping of name: value.")]
    [DataRow("config-json", "merge|--config|{dir}/job.json", "error: {dir}/job.json: ")]
    public void ErrorsAreOneLineAndLeaveNoOutput(string name, string arguments, string expected)
    {
        using var dir = new TempDirectory();
        var models = WriteModels(dir);
        File.WriteAllText(dir.File("job.yaml"), "method: ties\nbase: base.safetensors\nexperts: [e0.safetensors]\nout: out.safetensors\n");
        File.WriteAllText(dir.File("bad.yaml"), "method: ties\nbase: base.safetensors\n# the list is not closed\nexperts: [e0.safetensors, e1.safetensors\nout: out.safetensors\n");
        File.WriteAllText(dir.File("typo.yaml"), "method: ties\nlamda: 0.3\nbase: base.safetensors\nexperts: [e0.safetensors]\nout: out.safetensors\n");
        File.WriteAllText(dir.File("boolean.yaml"), "method: ties\nbase: base.safetensors\nexperts: [e0.safetensors]\nout: out.safetensors\nallow_missing: sometimes\n");
        File.WriteAllText(dir.File("expert-key.yaml"), "method: ties\nbase: base.safetensors\nexperts:\n  - path: e0.safetensors\n    wieght: 2\nout: out.safetensors\n");
        File.WriteAllText(dir.File("parameters.yaml"), "method: ties\nbase: base.safetensors\nexperts: [e0.safetensors]\nout: out.safetensors\nparameters: [keep, 0.5]\n");
        File.WriteAllText(dir.File("job.json"), "{ \"method\": \"ties\", \"base\": \"base.safetensors\" \"experts\": [] }");
        string Expand(string text) => text.Replace("{dir}", dir.Path, StringComparison.Ordinal)
            .Replace("{base}", models.Base, StringComparison.Ordinal).Replace("{out}", dir.File("out.safetensors"), StringComparison.Ordinal);
        var args = arguments.Split('|').SelectMany(a => a == "{experts}" ? models.ExpertArgs : [Expand(a)]).ToArray();

        var (exit, output, error) = Run(args);

        Assert.AreEqual(1, exit, name);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, $"{name}: one line, got: {error}");
        StringAssert.StartsWith(lines[0], "error: ", name);
        StringAssert.Contains(lines[0], Expand(expected), name);
        Assert.AreEqual(string.Empty, output, name);
        Assert.IsFalse(File.Exists(dir.File("out.safetensors")), $"{name}: no output file");
        Assert.IsEmpty(Directory.GetFiles(dir.Path, "*.partial"), $"{name}: no partial file");
    }
}
