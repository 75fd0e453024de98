using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// One tensor of the model as a merge method sees it: the base (pre-trained) weights θ0 and every expert's task
/// vector τ_i = w_i·(θ_i − θ0), all float32 and of one shape.
/// </summary>
/// <remarks>
/// Methods receive task vectors rather than expert weights so per-expert weights, dtype conversion and validation
/// happen once, in <see cref="FromExperts"/>, for every method and every driver.
/// </remarks>
public sealed class MergeTensorInput : IDisposable
{
    private readonly List<Tensor> _owned = [];

    /// <summary>The task vectors as one [experts, ...] tensor when they are rows of it (see <see cref="FromStackedTaskVectors"/>).</summary>
    private Tensor? _stacked;

    /// <summary>Wraps tensors the caller keeps owning; they must be float32 and all of the base's shape.</summary>
    public MergeTensorInput(string name, Tensor baseTensor, IReadOnlyList<Tensor> taskVectors)
        : this(name, baseTensor, taskVectors, ownsBase: false, ownsTaskVectors: false)
    {
    }

    private MergeTensorInput(string name, Tensor baseTensor, IReadOnlyList<Tensor> taskVectors, bool ownsBase, bool ownsTaskVectors)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(baseTensor);
        ArgumentNullException.ThrowIfNull(taskVectors);
        if (ownsBase)
        {
            _owned.Add(baseTensor);
        }

        if (ownsTaskVectors)
        {
            _owned.AddRange(taskVectors);
        }

        Name = name;
        Base = baseTensor;
        TaskVectors = taskVectors;
        try
        {
            Validate();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The tensor's name in the checkpoint.</summary>
    public string Name { get; }

    /// <summary>θ0, float32.</summary>
    public Tensor Base { get; }

    /// <summary>τ_i per expert, in expert order, float32, shape of <see cref="Base"/>.</summary>
    public IReadOnlyList<Tensor> TaskVectors { get; }

    /// <summary>Number of experts (task vectors).</summary>
    public int ExpertCount => TaskVectors.Count;

    /// <summary>
    /// Per expert, true when it lacks this tensor (allowed with allow-missing): its task vector is zero here, and methods
    /// leave these entries out of that task's statistics. Null: every expert holds the tensor.
    /// </summary>
    internal bool[]? LackingExperts { get; init; }

    /// <summary>
    /// Builds the input from raw weights: converts floating tensors to float32, checks shapes and that every value
    /// is finite, and computes τ_i = w_i·(θ_i − θ0). Errors name the tensor and the expert.
    /// </summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="baseTensor">θ0 (any floating dtype).</param>
    /// <param name="experts">θ_i per expert (any floating dtype, shape of θ0).</param>
    /// <param name="expertWeights">Optional w_i scaling each task vector (default 1).</param>
    /// <param name="expertNames">Optional names used in error messages.</param>
    public static MergeTensorInput FromExperts(
        string name,
        Tensor baseTensor,
        IReadOnlyList<Tensor> experts,
        IReadOnlyList<double>? expertWeights = null,
        IReadOnlyList<string>? expertNames = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(baseTensor);
        ArgumentNullException.ThrowIfNull(experts);
        if (experts.Count == 0)
        {
            throw new MergeInputException($"Tensor '{name}': no expert to merge.", name);
        }

        if (expertWeights is not null && expertWeights.Count != experts.Count)
        {
            throw new ArgumentException($"{expertWeights.Count} expert weight(s) given for {experts.Count} expert(s).", nameof(expertWeights));
        }

        EnsureFloatingAndFinite(name, baseTensor, "the base model", expertIndex: null);
        for (int i = 0; i < experts.Count; i++)
        {
            string who = MergeInputException.DescribeExpert(i, expertNames);
            if (!experts[i].shape.SequenceEqual(baseTensor.shape))
            {
                throw new MergeInputException(
                    $"Tensor '{name}': {who} has shape {MergeInputException.FormatShape(experts[i].shape)}, " +
                    $"expected the base model's {MergeInputException.FormatShape(baseTensor.shape)}.",
                    name,
                    i);
            }

            EnsureFloatingAndFinite(name, experts[i], who, i);
        }

        using var scope = NewDisposeScope();
        var base32 = baseTensor.to_type(ScalarType.Float32, copy: true);
        var taskVectors = new Tensor[experts.Count];
        for (int i = 0; i < experts.Count; i++)
        {
            var taskVector = experts[i].to_type(ScalarType.Float32).sub(base32);
            double weight = expertWeights?[i] ?? 1.0;
            taskVectors[i] = weight == 1.0 ? taskVector : ScalarOperands.With(weight, taskVector.mul);
        }

        base32.DetachFromDisposeScope();
        foreach (var taskVector in taskVectors)
        {
            taskVector.DetachFromDisposeScope();
        }

        return new MergeTensorInput(name, base32, taskVectors, ownsBase: true, ownsTaskVectors: true);
    }

    /// <summary>
    /// Turns θ_i, stored as rows of <paramref name="stacked"/> ([experts, ...], float32, contiguous), into
    /// τ_i = w_i·(θ_i − θ0) in place: the same float32 operations as <see cref="FromExperts"/>, so the same bits,
    /// without allocating. Values must already be known finite.
    /// </summary>
    internal static void ToTaskVectorsInPlace(Tensor baseTensor, Tensor stacked, IReadOnlyList<double>? expertWeights)
    {
        for (int i = 0; i < stacked.shape[0]; i++)
        {
            using var row = stacked.select(0, i);
            row.sub_(baseTensor);
            double weight = expertWeights?[i] ?? 1.0;
            if (weight != 1.0)
            {
                ScalarOperands.With(weight, row.mul_); // in place: returns the row itself
            }
        }
    }

    /// <summary>
    /// Wraps task vectors held as the rows of one [experts, ...] float32 tensor (e.g. a streaming driver's reused read
    /// buffer after <see cref="ToTaskVectorsInPlace"/>) without copying; <see cref="StackTaskVectors"/> then costs nothing.
    /// The caller keeps owning <paramref name="baseTensor"/> and <paramref name="stacked"/> and must not change them
    /// while the input is used.
    /// </summary>
    internal static MergeTensorInput FromStackedTaskVectors(string name, Tensor baseTensor, Tensor stacked, bool[]? lackingExperts = null)
    {
        var rows = stacked.unbind(0);
        foreach (var row in rows)
        {
            row.DetachFromDisposeScope();
        }

        return new MergeTensorInput(name, baseTensor, rows, ownsBase: false, ownsTaskVectors: true) { _stacked = stacked, LackingExperts = lackingExperts };
    }

    /// <summary>The same tensor with other task vectors (which this new input owns), e.g. after DARE's random drop.</summary>
    internal MergeTensorInput WithOwnedTaskVectors(IReadOnlyList<Tensor> taskVectors) =>
        new(Name, Base, taskVectors, ownsBase: false, ownsTaskVectors: true) { LackingExperts = LackingExperts };

    /// <summary>τ stacked along a new leading expert dimension: shape [experts, ...]. Callers only read it (and dispose it).</summary>
    internal Tensor StackTaskVectors() => _stacked is { } stacked ? stacked.alias() : torch.stack(TaskVectors, 0);

    /// <summary>Entries per slice of <see cref="ForEachSlice"/>: [experts, 2^18] float32 temporaries are 8 MiB for 8 experts.</summary>
    internal const long SliceElements = 1 << 18;

    /// <summary>
    /// Calls <paramref name="visit"/> with consecutive slices of the flattened tensor: (first entry, length, τ stacked as
    /// [experts, length]). Methods computed with tensor ops take a tensor slice by slice so their temporaries stay a few
    /// slices big, whatever the tensor's size.
    /// </summary>
    internal void ForEachSlice(Tensor stacked, Action<long, long, Tensor> visit)
    {
        long count = Base.numel();
        using var rows = stacked.reshape(ExpertCount, count);
        for (long start = 0; start < count; start += SliceElements)
        {
            long length = Math.Min(SliceElements, count - start);
            using var scope = NewDisposeScope();
            visit(start, length, rows.narrow(1, start, length));
        }
    }

    /// <summary>One value per expert ([experts]) reshaped to broadcast against stacked task vectors: [experts, 1, ...].</summary>
    internal Tensor PerExpert(Tensor values) =>
        values.reshape([ExpertCount, .. Enumerable.Repeat(1L, (int)Base.dim())]);

    /// <summary>Disposes the tensors this input owns (those it made, e.g. task vectors computed from experts).</summary>
    public void Dispose()
    {
        foreach (var tensor in _owned)
        {
            tensor.Dispose();
        }

        _owned.Clear();
    }

    private void Validate()
    {
        if (TaskVectors.Count == 0)
        {
            throw new MergeInputException($"Tensor '{Name}': no task vector to merge.", Name);
        }

        if (Base.dtype != ScalarType.Float32)
        {
            throw new MergeInputException($"Tensor '{Name}': the base tensor is {Base.dtype}, expected Float32 (MergeTensorInput.FromExperts converts).", Name);
        }

        for (int i = 0; i < TaskVectors.Count; i++)
        {
            var taskVector = TaskVectors[i];
            if (taskVector.dtype != ScalarType.Float32)
            {
                throw new MergeInputException(
                    $"Tensor '{Name}': the task vector of expert {i} is {taskVector.dtype}, expected Float32.", Name, i);
            }

            if (!taskVector.shape.SequenceEqual(Base.shape))
            {
                throw new MergeInputException(
                    $"Tensor '{Name}': the task vector of expert {i} has shape {MergeInputException.FormatShape(taskVector.shape)}, " +
                    $"expected {MergeInputException.FormatShape(Base.shape)}.",
                    Name,
                    i);
            }
        }
    }

    /// <summary>Throws a <see cref="MergeInputException"/> naming the tensor and <paramref name="who"/> unless every value is finite.</summary>
    internal static void EnsureFloatingAndFinite(string name, Tensor tensor, string who, int? expertIndex)
    {
        if (!tensor.is_floating_point())
        {
            throw new MergeInputException(
                $"Tensor '{name}': {who} has dtype {tensor.dtype}; only floating tensors can be merged (exclude it to copy it from the base).",
                name,
                expertIndex);
        }

        using var finite = tensor.isfinite();
        using var allFinite = finite.all();
        if (!allFinite.item<bool>())
        {
            using var nonFinite = finite.logical_not();
            using var nonFiniteCount = nonFinite.sum();
            throw new MergeInputException(
                $"Tensor '{name}': {who} contains {nonFiniteCount.item<long>()} NaN or infinite value(s).",
                name,
                expertIndex);
        }
    }
}
