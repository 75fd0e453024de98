namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Consecutive entries of one tensor as an elementwise method sees them: θ0 and every expert's τ_i, float32, the task
/// vectors laid out expert after expert (<see cref="TaskVector"/>).
/// </summary>
internal readonly ref struct ElementwiseChunk
{
    private readonly ReadOnlySpan<float> _taskVectors;

    public ElementwiseChunk(ReadOnlySpan<float> baseValues, ReadOnlySpan<float> taskVectors, int expertCount)
    {
        if (expertCount < 1 || taskVectors.Length != baseValues.Length * expertCount)
            throw new ArgumentException($"{taskVectors.Length} task vector value(s) for {expertCount} expert(s) of {baseValues.Length} entries.");
        Base = baseValues;
        _taskVectors = taskVectors;
        ExpertCount = expertCount;
    }

    public ReadOnlySpan<float> Base { get; }

    public int ExpertCount { get; }

    public int Length => Base.Length;

    public ReadOnlySpan<float> TaskVector(int expert) => _taskVectors.Slice(expert * Base.Length, Base.Length);
}
