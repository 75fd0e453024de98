using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.ML.ModelMerging.Checkpoints;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Settings of a streaming merge that are not the method's own parameters.</summary>
public sealed record StreamingMergeOptions
{
    /// <summary>Stored dtype of floating-point outputs; null keeps each base tensor's dtype.</summary>
    public SafeTensorsDType? OutputDType { get; init; }
    /// <summary>Split the output into shards of at most this many bytes; null writes one file.</summary>
    public long? MaxShardBytes { get; init; }
    /// <summary>Let experts lack merged tensors (their task vector is zero there) and hold extra ones (ignored).</summary>
    public bool AllowMissing { get; init; }
    /// <summary>w_i scaling each expert's task vector; null = 1 each.</summary>
    public IReadOnlyList<double>? ExpertWeights { get; init; }
    /// <summary>Parameters recorded in the output's metadata for provenance: every parameter the method used, defaults included (see <see cref="MergeJob"/>).</summary>
    public IReadOnlyDictionary<string, string>? RecordedParameters { get; init; }
    /// <summary>Receives a report per tensor and phase; optional.</summary>
    public IProgress<StreamingMergeProgress>? Progress { get; init; }
}

/// <summary>
/// Where a streaming merge is. <c>Pass</c> counts full reads of the inputs as the report's <c>Passes</c> does (a sampling
/// phase reads no pass of its own and carries the number of the next one); <c>PassCount</c> is the number of reads
/// expected from what is known so far (a method may find a pass unnecessary), and at the merge it is the final count.
/// </summary>
public sealed record StreamingMergeProgress(string Phase, int Pass, int PassCount, int Tensor, int TensorCount, string TensorName);

/// <summary>What a streaming merge did; <c>Passes</c> counts the reads of every input (statistics passes and the merge).</summary>
public sealed record StreamingMergeReport(string OutputPath, IReadOnlyList<string> MergedTensors, IReadOnlyList<string> CopiedTensors,
    int Passes, long OutputBytes);

/// <summary>
/// Runs any <see cref="IMergeMethod"/> over checkpoints on disk, one tensor at a time: memory holds the base and expert
/// copies of a single tensor (plus the method's O(1) statistics), whatever the number of tensors. Methods with global
/// statistics get extra read passes. The output is written under a temporary name and renamed only when complete, so an
/// error or a cancellation leaves nothing behind.
/// </summary>
public sealed class StreamingMergeDriver
{
    /// <summary>Metadata key of the output recording the method's name.</summary>
    public const string MethodMetadataKey = "mlmerge.merge_method";
    /// <summary>Metadata key of the output recording every parameter the method used (JSON object), and the driver's settings.</summary>
    public const string ParametersMetadataKey = "mlmerge.merge_parameters";
    /// <summary>Metadata key of the output recording every input: role, full path, size, header SHA-256 and content fingerprint (JSON array).</summary>
    public const string InputsMetadataKey = "mlmerge.merge_inputs";

    /// <summary>The full paths of the experts a merge's output records in <see cref="InputsMetadataKey"/>; empty when it records none.</summary>
    public static IReadOnlyList<string> ExpertInputPaths(IReadOnlyDictionary<string, string> metadata) =>
        [.. RecordedInputs(metadata).Where(i => i.TryGetValue("role", out var role) && role.StartsWith("expert", StringComparison.Ordinal) && i.ContainsKey("path")).Select(i => i["path"])];

    /// <summary>Every input a merge's output records in <see cref="InputsMetadataKey"/> (role, path, sizes, hashes); empty when it records none.</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, string>> RecordedInputs(IReadOnlyDictionary<string, string> metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (!metadata.TryGetValue(InputsMetadataKey, out string? json)) return [];
        try
        {
            return [.. System.Text.Json.JsonSerializer.Deserialize<List<Dictionary<string, string>>>(json) ?? []];
        }
        catch (System.Text.Json.JsonException)
        {
            return [];
        }
    }
    /// <summary>Prefix of the extra tensors written by methods that need the task at inference (TALL masks, EMR).</summary>
    public const string TaskSpecificPrefix = "mlmerge.task_specific.";

    /// <summary>A driver that merges the tensors <paramref name="filter"/> selects (default: <see cref="TensorFilter.Default"/>).</summary>
    public StreamingMergeDriver(TensorFilter? filter = null) => Filter = filter ?? TensorFilter.Default;

    /// <summary>Which tensors are merged; the others are copied from the base.</summary>
    public TensorFilter Filter { get; }

    /// <summary>
    /// Merges the expert checkpoints into the base with <paramref name="method"/>, streaming tensor by tensor, and writes
    /// <paramref name="outputPath"/> (renamed into place when complete). The base's <c>config.json</c> and
    /// <c>preprocessor_config.json</c> are copied next to the output.
    /// </summary>
    /// <param name="method">A fresh method instance (from a registry or constructed directly).</param>
    /// <param name="basePath">θ0: a <c>.safetensors</c> file, an index or a directory.</param>
    /// <param name="expertPaths">θ_i, in order; each may also be a PEFT adapter folder, read as the base plus its ΔW.</param>
    /// <param name="outputPath">A <c>.safetensors</c> file or a directory; never one of the inputs.</param>
    /// <param name="options">Output dtype, sharding, expert weights, progress; defaults when null.</param>
    /// <param name="cancellation">Stops the merge; temporary files are removed and nothing appears at the output.</param>
    /// <returns>The merged and copied tensors, the number of input passes and the bytes written.</returns>
    /// <exception cref="MergeInputException">The inputs do not fit together, or a merged value is not finite once stored; the message names the tensor and expert.</exception>
    /// <exception cref="CheckpointFormatException">An input is not a valid checkpoint.</exception>
    /// <exception cref="OperationCanceledException">The merge was cancelled.</exception>
    public StreamingMergeReport Merge(IMergeMethod method, string basePath, IReadOnlyList<string> expertPaths, string outputPath,
        StreamingMergeOptions? options = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(method);
        options ??= new StreamingMergeOptions();
        if (expertPaths.Count == 0) throw new ArgumentException("At least one expert checkpoint is needed.");
        if (options.ExpertWeights is { } w && w.Count != expertPaths.Count)
            throw new ArgumentException($"{w.Count} expert weight(s) given for {expertPaths.Count} expert(s).");

        using var baseCheckpoint = Checkpoint.Open(basePath);
        var experts = new List<Checkpoint>();
        try
        {
            foreach (var path in expertPaths) experts.Add(AdapterCheckpoint.OpenExpert(path, baseCheckpoint));
            OutputOverlap.EnsureDistinct(outputPath, experts.Prepend(baseCheckpoint).SelectMany(InputFiles));
            var mergePlan = Plan(baseCheckpoint, experts, options);
            var merged = mergePlan.MergedTensorNames;
            var copied = mergePlan.CopiedTensorNames;
            var names = experts.Select(e => e.Source).ToList();
            int passes = method.StatisticsPassCount;

            method.Begin(experts.Count);
            var chunks = new ElementwiseChunkReader(baseCheckpoint, experts, options.ExpertWeights, names, WorkerCount);
            // Task-specific methods take this path when they have chunk kernels and every mask fits a byte array.
            var elementwise = method is IElementwiseMergeMethod { IsElementwise: true } candidate
                && (!method.ProducesTaskSpecificWeights || (candidate is ITaskSpecificElementwiseMethod
                    && merged.All(name => baseCheckpoint.GetEntry(name).ElementCount <= Array.MaxLength)))
                && merged.All(chunks.CanRead) ? candidate : null;
            var taskSpecific = method.ProducesTaskSpecificWeights ? elementwise as ITaskSpecificElementwiseMethod : null;
            // Methods that need statistics of each tensor alone read it once into buffers and look at it there.
            var tensorwise = elementwise is null && method is ITensorwiseMergeMethod { IsTensorwise: true } byTensor
                && !method.ProducesTaskSpecificWeights && passes == 0 && merged.All(chunks.CanRead) ? byTensor : null;
            using var reader = new TensorReadAhead(baseCheckpoint, experts, options.ExpertWeights, names);
            // The elementwise path checks that every value is finite once, in the merge: statistics of a non-finite
            // input are harmless garbage, and the merge fails before anything is renamed into place.
            bool inputsChecked = false;

            int reads = 0; // full reads of every input: statistics passes that ran on every chunk, and merges
            // EMR's pass only decides λ_t: it is gathered from the merge itself and the scales are overwritten afterwards.
            bool scalesFromMerge = taskSpecific is { ScalesFromMerge: true } && passes == 1 && method.NeedsPass(0);
            bool deferLast = elementwise is not null && passes > 0 && !scalesFromMerge;
            bool IsSample(int pass) => elementwise?.SampledChunks(pass) is int sampled && SampleChunks(baseCheckpoint, merged, sampled) is not null;
            // Reads expected from pass `from` on, from what the method knows now, plus the merge (the count progress reports).
            int ExpectedReads(int from, bool lastDeferred) => reads + 1 + Enumerable.Range(from, Math.Max(0, passes - from))
                .Count(p => !(lastDeferred && p == passes - 1) && !IsSample(p) && method.NeedsPass(p));
            void StatisticsPass(int pass)
            {
                if (!method.NeedsPass(pass))
                {
                    method.FinishPass(pass);
                    return;
                }

                var sample = elementwise?.SampledChunks(pass) is int sampled ? SampleChunks(baseCheckpoint, merged, sampled) : null;
                var accumulators = elementwise is null ? null : Enumerable.Range(0, chunks.WorkerCount).Select(_ => elementwise.CreateAccumulator(pass)).ToArray();
                if (sample is not null)
                {
                    // A sample: a chunk here and there, read on all workers at once rather than tensor by tensor.
                    cancellation.ThrowIfCancellationRequested();
                    options.Progress?.Report(new StreamingMergeProgress("statistics (sample)", reads, ExpectedReads(pass, deferLast), 0, merged.Count, merged[0]));
                    chunks.ForEachChunk(sample, (in ElementwiseChunk chunk, Span<float> _, int worker, long _) => accumulators![worker].Accumulate(chunk), checkFinite: false);
                }
                else
                {
                    if (elementwise is null) reader.Start(merged);
                    int expected = ExpectedReads(pass, deferLast && pass < passes - 1);
                    for (int i = 0; i < merged.Count; i++)
                    {
                        cancellation.ThrowIfCancellationRequested();
                        options.Progress?.Report(new StreamingMergeProgress("statistics", reads, expected, i, merged.Count, merged[i]));
                        if (accumulators is not null)
                        {
                            NamingBaseFile(baseCheckpoint, () => chunks.ForEachChunk(merged[i], null,
                                (in ElementwiseChunk chunk, Span<float> _, int worker, long _) => accumulators[worker].Accumulate(chunk), checkFinite: false));
                            continue;
                        }

                        using var scope = NewDisposeScope();
                        using var input = Next(reader, baseCheckpoint);
                        method.AccumulateStatistics(pass, input);
                    }
                }

                foreach (var accumulator in accumulators ?? []) elementwise!.AddAccumulated(pass, accumulator);
                if (sample is null) reads++;

                method.FinishPass(pass);
            }

            // An elementwise method may fold its last statistics pass into the merge (one read of every input less).
            for (int pass = 0; pass < (deferLast || scalesFromMerge ? passes - 1 : passes); pass++) StatisticsPass(pass);
            var deferred = deferLast ? elementwise!.BeginDeferredLastPass(MaxDeferredPatches) : null;
            if (deferLast && deferred is null) StatisticsPass(passes - 1);

            var plan = OutputPlan(baseCheckpoint, options.OutputDType, method.ProducesTaskSpecificWeights ? merged : null, experts.Count);
            var metadata = OutputMetadata(baseCheckpoint, experts, method, options, basePath);
            var mergedSet = merged.ToHashSet(StringComparer.Ordinal);
            var storedAs = plan.ToDictionary(p => p.Name, p => p.DType, StringComparer.Ordinal);
            var tensorIndex = merged.Select((name, i) => (name, i)).ToDictionary(p => p.name, p => p.i, StringComparer.Ordinal);

            // False when a deferred last pass overflowed: nothing is left behind, and the caller runs the pass and merges again.
            string written = outputPath;
            bool WriteOutput(DeferredLastPass? deferred)
            {
                int mergeRead = reads - 1; // counted before the call
                int expectedReads = reads;
                using var writer = new CheckpointWriter(outputPath, plan, metadata, options.MaxShardBytes);
                written = writer.OutputPath;
                if (elementwise is null && tensorwise is null) reader.Start(merged);
                var workers = deferred is null ? null : Enumerable.Range(0, chunks.WorkerCount).Select(_ => deferred.CreateWorker()).ToArray();

                // Elementwise methods fill one of two output buffers, allocated once, while the other is being written.
                long largest = merged.Select(name => baseCheckpoint.GetEntry(name).ElementCount).DefaultIfEmpty(0).Max();
                var outputBuffers = elementwise is null && tensorwise is null ? null : new OutputBufferRing(largest);
                var tensorBuffers = tensorwise is null ? null : new TensorBuffers(experts.Count, largest);
                // Task-specific methods also fill a shared task vector and one byte per entry per task, lent in the same turn.
                var sharedBuffers = taskSpecific is null ? null : new OutputBufferRing(largest);
                var maskBuffers = taskSpecific is null ? null : new MaskBufferRing(experts.Count, largest);
                var maskScratch = taskSpecific is null ? null
                    : Enumerable.Range(0, chunks.WorkerCount).Select(_ => new byte[experts.Count * ElementwiseTensors.ChunkElements]).ToArray();
                var scaleAccumulators = scalesFromMerge ? Enumerable.Range(0, chunks.WorkerCount).Select(_ => elementwise!.CreateAccumulator(passes - 1)).ToArray() : null;
                // Placeholders when the scales come from this merge (overwritten once it is done).
                var scales = taskSpecific is null ? null
                    : scalesFromMerge ? [.. Enumerable.Repeat(1f, experts.Count)] : taskSpecific.TaskScales(experts.Count).Select(s => (float)s).ToArray();
                using var writes = new OrderedBackgroundWrites();
                int index = 0;
                foreach (var entry in baseCheckpoint.Tensors)
                {
                    cancellation.ThrowIfCancellationRequested();
                    options.Progress?.Report(new StreamingMergeProgress("merge", mergeRead, expectedReads, index++, baseCheckpoint.Tensors.Count, entry.Name));
                    if (!mergedSet.Contains(entry.Name))
                    {
                        writes.Enqueue(() => WriteCopied(writer, baseCheckpoint, entry));
                        continue;
                    }

                    if (taskSpecific is not null)
                    {
                        var output = outputBuffers!.Lend(entry.ElementCount);
                        var shared = sharedBuffers!.Lend(entry.ElementCount);
                        var masks = maskBuffers!.Lend();
                        int count = (int)entry.ElementCount, taskCount = experts.Count;
                        NamingBaseFile(baseCheckpoint, () => chunks.ForEachChunk(entry.Name, output,
                            (in ElementwiseChunk chunk, Span<float> values, int worker, long start) =>
                            {
                                int n = chunk.Length;
                                var scratch = maskScratch![worker].AsSpan(0, taskCount * n);
                                var sharedValues = shared.Slice(start, n);
                                taskSpecific.MergeChunk(chunk, values, sharedValues, scratch);
                                if (scaleAccumulators is not null) taskSpecific.AccumulateMerged(scaleAccumulators[worker], chunk, sharedValues, scratch);
                                for (int e = 0; e < taskCount; e++) scratch.Slice(e * n, n).CopyTo(masks[e].AsSpan((int)start, n));
                            }, !inputsChecked));

                        string merging = entry.Name;
                        writes.Enqueue(() =>
                        {
                            NonFiniteOutput.Check(output.Parts(), storedAs[merging], merging);
                            writer.WriteFloats(output.Parts());
                            writer.WriteFloats(shared.Parts());
                            foreach (var mask in masks) writer.WriteBytes(mask.AsSpan(0, count));
                            writer.WriteBytes(MemoryMarshal.AsBytes(scales!.AsSpan()));
                        });
                        continue;
                    }

                    if (tensorwise is not null)
                    {
                        var output = outputBuffers!.Lend(entry.ElementCount);
                        NamingBaseFile(baseCheckpoint, () => tensorBuffers!.Load(chunks, entry.Name, entry.ElementCount, !inputsChecked));
                        tensorwise.MergeTensor(tensorBuffers!, output);
                        string merging = entry.Name;
                        writes.Enqueue(() =>
                        {
                            NonFiniteOutput.Check(output.Parts(), storedAs[merging], merging);
                            writer.WriteFloats(output.Parts());
                        });
                        continue;
                    }

                    if (elementwise is not null)
                    {
                        // The buffer lent now was last written two tensors ago; that write is over (one write in flight at most).
                        var output = outputBuffers!.Lend(entry.ElementCount);
                        if (workers is not null)
                        {
                            if (deferred!.Overflowed) return false;
                            int tensor = tensorIndex[entry.Name];
                            NamingBaseFile(baseCheckpoint, () => chunks.ForEachChunk(entry.Name, output,
                                (in ElementwiseChunk chunk, Span<float> values, int worker, long start) => workers[worker].MergeChunk(chunk, values, tensor, start), !inputsChecked));
                        }
                        else
                        {
                            NamingBaseFile(baseCheckpoint, () => chunks.ForEachChunk(entry.Name, output,
                                (in ElementwiseChunk chunk, Span<float> values, int _, long _) => elementwise.MergeChunk(chunk, values), !inputsChecked));
                        }

                        string merging = entry.Name;
                        writes.Enqueue(() =>
                        {
                            NonFiniteOutput.Check(output.Parts(), storedAs[merging], merging);
                            writer.WriteFloats(output.Parts());
                        });
                        continue;
                    }

                    // Merged tensors come in the base's (ordinal) order, the order the reader was given. The result is written
                    // on the writing thread while the next tensor is merged, then disposed here (see OrderedBackgroundWrites).
                    MergedTensor result;
                    using (var scope = NewDisposeScope())
                    using (var input = Next(reader, baseCheckpoint))
                    {
                        result = method.MergeTensor(input).DetachFromDisposeScope();
                    }

                    string name = entry.Name;
                    writes.Enqueue(() =>
                    {
                        NonFiniteOutput.Check(result.Merged, storedAs[name], name);
                        writer.Write(result.Merged);
                        if (method.ProducesTaskSpecificWeights) WriteTaskSpecific(writer, method, name, result);
                    }, owned: result);
                }

                writes.Drain();
                inputsChecked = true;
                if (scaleAccumulators is not null)
                {
                    foreach (var accumulator in scaleAccumulators) elementwise!.AddAccumulated(passes - 1, accumulator);
                    method.FinishPass(passes - 1);
                    float[] final = [.. taskSpecific!.TaskScales(experts.Count).Select(s => (float)s)];
                    long[] entries = [.. Enumerable.Range(0, experts.Count).Select(e => (long)e)];
                    foreach (var name in merged) writer.Patch(TaskSpecificPrefix + name + ".scales", entries, final);
                }
                if (workers is not null)
                {
                    if (deferred!.Overflowed) return false;
                    foreach (var worker in workers) elementwise!.AddAccumulated(passes - 1, worker);
                    method.FinishPass(passes - 1);
                    // Entries whose merged value the last pass decided, overwritten in the temporary output before it is renamed.
                    foreach (var group in deferred.Patches(workers).GroupBy(p => p.Tensor))
                    {
                        var patches = group.OrderBy(p => p.Index).ToArray();
                        string patched = merged[group.Key];
                        NonFiniteOutput.Check([.. patches.Select(p => p.Index)], [.. patches.Select(p => p.Value)], storedAs[patched], patched);
                        writer.Patch(merged[group.Key], [.. patches.Select(p => p.Index)], [.. patches.Select(p => p.Value)]);
                    }
                }

                writer.Complete();
                return true;
            }

            reads++;
            if (!WriteOutput(deferred))
            {
                // Too many entries depended on the last pass to keep them in memory: run it, then merge again (the
                // abandoned merge read everything up to the overflow; it is counted whole).
                StatisticsPass(passes - 1);
                reads++;
                WriteOutput(null);
            }

            CopyModelConfigFiles(basePath, outputPath);
            return new StreamingMergeReport(written, merged, copied, reads, plan.Sum(p => p.ByteLength));
        }
        finally
        {
            foreach (var e in experts) e.Dispose();
        }
    }

    /// <summary>Every file a checkpoint is read from: its shards, and its index when it was opened through one.</summary>
    private static IEnumerable<string> InputFiles(Checkpoint checkpoint) =>
        File.Exists(checkpoint.Source) ? checkpoint.Files.Append(checkpoint.Source) : checkpoint.Files;

    /// <summary>
    /// About <paramref name="count"/> chunks spread evenly over all merged tensors (as if laid end to end), as (tensor,
    /// chunk index) pairs; null when that is every chunk.
    /// </summary>
    private static List<(string Name, long Chunk)>? SampleChunks(Checkpoint baseCheckpoint, IReadOnlyList<string> merged, int count)
    {
        var chunkCounts = merged.Select(name => (baseCheckpoint.GetEntry(name).ElementCount + ElementwiseTensors.ChunkElements - 1) / ElementwiseTensors.ChunkElements).ToArray();
        long total = chunkCounts.Sum();
        if (count >= total) return null;
        var sample = new List<(string Name, long Chunk)>(count);
        int tensor = 0;
        long first = 0; // global index of the current tensor's chunk 0
        for (int k = 0; k < count; k++)
        {
            long global = (long)((k + 0.5) * total / count);
            while (global >= first + chunkCounts[tensor]) first += chunkCounts[tensor++];
            sample.Add((merged[tensor], global - first));
        }

        return sample;
    }

    /// <summary>
    /// Checks every input against the base from the headers alone, before any work (<see cref="MergePlan"/>, the
    /// checks of the in-memory driver); messages name experts by their path.
    /// </summary>
    private MergePlan Plan(Checkpoint baseCheckpoint, IReadOnlyList<Checkpoint> experts, StreamingMergeOptions options)
    {
        static Dictionary<string, TensorSignature> Signatures(Checkpoint checkpoint) =>
            checkpoint.Tensors.ToDictionary(t => t.Name, t => new TensorSignature(t.DType.ToScalarType(), t.Shape), StringComparer.Ordinal);

        return MergePlan.Create(Signatures(baseCheckpoint), [.. experts.Select(Signatures)], Filter, options.ExpertWeights,
            [.. experts.Select(e => e.Source)], options.AllowMissing);
    }

    /// <summary>
    /// Most entries a deferred last statistics pass may record for patching (about 24 bytes each, twice that while a list grows) before the
    /// driver gives up on the deferral and runs the pass.
    /// </summary>
    public long MaxDeferredPatches { get; init; } = 1 << 20;

    /// <summary>Threads of the elementwise path: every core reads and computes (default: the processor count, at most 8).</summary>
    public int WorkerCount { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 8);

    /// <summary>Runs <paramref name="step"/>; an error of the base's values names its file (experts are named by path already).</summary>
    private static void NamingBaseFile(Checkpoint baseCheckpoint, Action step)
    {
        try
        {
            step();
        }
        catch (MergeInputException e) when (e.ExpertIndex is null)
        {
            throw new MergeInputException($"{e.Message} (file {baseCheckpoint.Source})", e.TensorName);
        }
    }

    /// <summary>The reader's next tensor; an error of the base's values names its file (experts are named by path already).</summary>
    private static MergeTensorInput Next(TensorReadAhead reader, Checkpoint baseCheckpoint)
    {
        try
        {
            return reader.Next();
        }
        catch (MergeInputException e) when (e.ExpertIndex is null)
        {
            throw new MergeInputException($"{e.Message} (file {baseCheckpoint.Source})", e.TensorName);
        }
    }

    private static void WriteCopied(CheckpointWriter writer, Checkpoint baseCheckpoint, TensorEntry entry)
    {
        if (writer.Next!.DType == entry.DType)
        {
            writer.WriteBytes(baseCheckpoint.ReadBytes(entry.Name));
            return;
        }

        using var stored = baseCheckpoint.ReadTensor(entry.Name);
        writer.Write(stored);
    }

    private static List<TensorSpec> OutputPlan(Checkpoint baseCheckpoint, SafeTensorsDType? outputDType, IReadOnlyList<string>? taskSpecific, int experts)
    {
        var withParts = taskSpecific?.ToHashSet(StringComparer.Ordinal);
        var plan = new List<TensorSpec>();
        foreach (var t in baseCheckpoint.Tensors)
        {
            plan.Add(new TensorSpec(t.Name, outputDType is { } d && t.DType.IsFloatingPoint() ? d : t.DType, t.Shape));
            if (withParts is null || !withParts.Contains(t.Name)) continue;
            // Shared task vector, one boolean mask per task and the per-task scales, right after the merged weights.
            plan.Add(new TensorSpec(TaskSpecificPrefix + t.Name + ".task_vector", SafeTensorsDType.F32, t.Shape));
            for (int task = 0; task < experts; task++)
                plan.Add(new TensorSpec(TaskSpecificPrefix + t.Name + $".mask.{task}", SafeTensorsDType.Bool, t.Shape));
            plan.Add(new TensorSpec(TaskSpecificPrefix + t.Name + ".scales", SafeTensorsDType.F32, new long[] { experts }));
        }
        return plan;
    }

    /// <summary>The per-task parts of TALL masks / EMR, stored right after the tensor they belong to.</summary>
    private static void WriteTaskSpecific(CheckpointWriter writer, IMergeMethod method, string name, MergedTensor result)
    {
        var parts = result.TaskSpecific ?? throw new InvalidOperationException($"{method.Name} returned no task-specific parts for '{name}'.");
        writer.Write(parts.SharedTaskVector);
        foreach (var mask in parts.Masks) writer.Write(mask);
        using var scales = tensor(parts.Scales.Select(s => (float)s).ToArray());
        writer.Write(scales);
    }

    /// <summary>Hugging Face files describing the model, carried from the base to the output so it loads and exports as the base does.</summary>
    public static IReadOnlyList<string> ModelConfigFileNames { get; } = ["config.json", "preprocessor_config.json"];

    /// <summary>Where a checkpoint's Hugging Face files sit: the directory itself, or the directory holding the file.</summary>
    private static string ModelDirectory(string checkpointPath) =>
        Directory.Exists(checkpointPath) ? Path.GetFullPath(checkpointPath) : Path.GetDirectoryName(Path.GetFullPath(checkpointPath))!;

    /// <summary>
    /// Copies the base's <c>config.json</c> and <c>preprocessor_config.json</c> next to the output (into a sharded output's
    /// directory). A file already there is left alone: the model config is in the output's metadata anyway.
    /// </summary>
    private static void CopyModelConfigFiles(string basePath, string outputPath)
    {
        string from = ModelDirectory(basePath);
        string to = Directory.Exists(outputPath) ? Path.GetFullPath(outputPath) : Path.GetDirectoryName(Path.GetFullPath(outputPath))!;
        if (string.Equals(from, to, StringComparison.Ordinal)) return;
        foreach (string name in ModelConfigFileNames)
        {
            string source = Path.Combine(from, name), destination = Path.Combine(to, name);
            if (File.Exists(source) && !File.Exists(destination)) File.Copy(source, destination);
        }
    }

    /// <summary>Metadata of the base that describes the base itself (its accuracy, the recipe that made it, its task), not a merge of it.</summary>
    private static bool DescribesTheBaseOnly(string key) =>
        key == "total_size" || (key.StartsWith("mlmerge.", StringComparison.Ordinal) && key != Models.VisionTransformerConfig.MetadataKey);

    private Dictionary<string, string> OutputMetadata(Checkpoint baseCheckpoint, IReadOnlyList<Checkpoint> experts, IMergeMethod method,
        StreamingMergeOptions options, string basePath)
    {
        // Keep the base's own metadata that still holds for the merge (e.g. the model config that makes a checkpoint
        // self-describing), not what describes the base alone (its accuracy, its zoo recipe, an earlier merge's provenance).
        var metadata = baseCheckpoint.Metadata.Where(kv => !DescribesTheBaseOnly(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        if (!metadata.ContainsKey(Models.VisionTransformerConfig.MetadataKey) && HuggingFaceModelConfig(basePath) is { } config)
            metadata[Models.VisionTransformerConfig.MetadataKey] = config;
        metadata[MethodMetadataKey] = method.Name;
        var parameters = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (options.RecordedParameters is not null) foreach (var (k, v) in options.RecordedParameters) parameters[k] = v;
        // The driver's settings, defaults included: a merge is reproduced from the metadata alone.
        parameters["expert_weights"] = string.Join(",", (options.ExpertWeights ?? [.. experts.Select(_ => 1.0)]).Select(x => x.ToString("R", CultureInfo.InvariantCulture)));
        parameters["exclude"] = string.Join(" ", Filter.ExcludePatterns);
        parameters["allow_missing"] = options.AllowMissing ? "true" : "false";
        parameters["dtype"] = options.OutputDType?.ToString() ?? "base";
        parameters["shard_size"] = options.MaxShardBytes?.ToString(CultureInfo.InvariantCulture) ?? "none";
        metadata[ParametersMetadataKey] = JsonSerializer.Serialize(parameters);
        var inputs = new List<Dictionary<string, string>> { Fingerprint("base", baseCheckpoint) };
        inputs.AddRange(experts.Select((e, i) => Fingerprint($"expert {i}", e)));
        metadata[InputsMetadataKey] = JsonSerializer.Serialize(inputs);
        return metadata;
    }

    /// <summary>The model config (our JSON) from a Hugging Face <c>config.json</c> next to the base, or null when there is none or it is no CLIP vision config.</summary>
    private static string? HuggingFaceModelConfig(string basePath)
    {
        string directory = ModelDirectory(basePath);
        string config = Path.Combine(directory, "config.json"), preprocessor = Path.Combine(directory, "preprocessor_config.json");
        if (!File.Exists(config)) return null;
        try
        {
            return Models.VisionTransformerConfig.FromHuggingFaceConfig(File.ReadAllText(config),
                preprocessorConfigJson: File.Exists(preprocessor) ? File.ReadAllText(preprocessor) : null).ToJson();
        }
        catch (Exception e) when (e is FormatException or JsonException or ArgumentException or KeyNotFoundException or InvalidOperationException)
        {
            return null; // another kind of model: the copied files still describe it
        }
    }

    /// <summary>An input's role, path and <see cref="CheckpointFingerprint"/>, as the merge's metadata records it.</summary>
    internal static Dictionary<string, string> Fingerprint(string role, Checkpoint checkpoint)
    {
        var fingerprint = CheckpointFingerprint.Of(checkpoint);
        return new Dictionary<string, string>
        {
            ["role"] = role,
            ["path"] = Path.GetFullPath(checkpoint.Source),
            ["bytes"] = fingerprint.Bytes.ToString(CultureInfo.InvariantCulture),
            ["header_sha256"] = fingerprint.HeaderSha256,
            ["content_sha256"] = fingerprint.ContentSha256,
            ["content_sha256_scope"] = CheckpointFingerprint.Scope,
        };
    }
}
