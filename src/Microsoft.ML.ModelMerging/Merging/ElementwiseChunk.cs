namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Consecutive entries of one tensor as an elementwise method sees them: θ0 and every expert's τ_i, float32, the task
/// vectors laid out expert after expert (<see cref="TaskVector"/>), or viewed in place in whole-tensor buffers
/// (<see cref="TensorBuffers"/>: no copy into chunk buffers).
/// </summary>
internal readonly ref struct ElementwiseChunk
{
    private readonly ReadOnlySpan<float> _taskVectors;
    private readonly bool[]? _lacking;
    private readonly FloatSegments[]? _rows;

    public ElementwiseChunk(ReadOnlySpan<float> baseValues, ReadOnlySpan<float> taskVectors, int expertCount, string tensorName = "", long start = 0, bool[]? lacking = null)
    {
        if (expertCount < 1 || taskVectors.Length != baseValues.Length * expertCount)
            throw new ArgumentException($"{taskVectors.Length} task vector value(s) for {expertCount} expert(s) of {baseValues.Length} entries.");
        Base = baseValues;
        _taskVectors = taskVectors;
        ExpertCount = expertCount;
        TensorName = tensorName;
        Start = start;
        _lacking = lacking;
        _rows = null;
    }

    /// <summary>Entries [start, start + length) of whole-tensor buffers: θ0 and one row of τ per expert, viewed in place.</summary>
    public ElementwiseChunk(FloatSegments baseValues, FloatSegments[] rows, long start, int length, string tensorName, bool[]? lacking)
    {
        Base = baseValues.Slice(start, length);
        _taskVectors = default;
        _rows = rows;
        ExpertCount = rows.Length;
        TensorName = tensorName;
        Start = start;
        _lacking = lacking;
    }

    /// <summary>
    /// True when expert <paramref name="expert"/> lacks the tensor (allowed with allow-missing): its τ is +0 here, and its
    /// entries must not enter the task's statistics (they are not part of that task's vector).
    /// </summary>
    public bool Lacks(int expert) => _lacking is not null && _lacking[expert];

    /// <summary>The tensor the entries belong to (methods whose value at an entry depends on where it is, e.g. DARE's masks).</summary>
    public string TensorName { get; }

    /// <summary>Index of the chunk's first entry in the flattened tensor.</summary>
    public long Start { get; }

    public ReadOnlySpan<float> Base { get; }

    public int ExpertCount { get; }

    public int Length => Base.Length;

    public ReadOnlySpan<float> TaskVector(int expert) =>
        _rows is null ? _taskVectors.Slice(expert * Base.Length, Base.Length) : _rows[expert].Slice(Start, Base.Length);

    /// <summary>The same entries with other task vectors (laid out the same way).</summary>
    public ElementwiseChunk WithTaskVectors(ReadOnlySpan<float> taskVectors) => new(Base, taskVectors, ExpertCount, TensorName, Start, _lacking);
}
