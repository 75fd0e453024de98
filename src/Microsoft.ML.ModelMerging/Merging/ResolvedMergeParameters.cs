namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>Checked, typed parameter values of one merge method (given values plus defaults).</summary>
public sealed class ResolvedMergeParameters
{
    private readonly string _methodName;
    private readonly IReadOnlyDictionary<string, object> _values;

    internal ResolvedMergeParameters(string methodName, IReadOnlyDictionary<string, object> values)
    {
        _methodName = methodName;
        _values = values;
    }

    public double GetNumber(string name) => Get<double>(name);

    public long GetInteger(string name) => Get<long>(name);

    /// <summary>The chosen word, spelled as declared.</summary>
    public string GetChoice(string name) => Get<string>(name);

    /// <summary>One number (for every expert) or one per expert.</summary>
    public IReadOnlyList<double> GetNumberPerExpert(string name) => Get<double[]>(name);

    private T Get<T>(string name) =>
        _values.TryGetValue(name, out object? value) && value is T typed
            ? typed
            : throw new ArgumentException($"Merge method '{_methodName}' declares no {typeof(T).Name} parameter '{name}'.", nameof(name));
}
