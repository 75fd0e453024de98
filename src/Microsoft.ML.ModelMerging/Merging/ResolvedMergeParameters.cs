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

    /// <summary>The value of a number parameter.</summary>
    public double GetNumber(string name) => Get<double>(name);

    /// <summary>The value of an integer parameter.</summary>
    public long GetInteger(string name) => Get<long>(name);

    /// <summary>The chosen word, spelled as declared.</summary>
    public string GetChoice(string name) => Get<string>(name);

    /// <summary>One number (for every expert) or one per expert.</summary>
    public IReadOnlyList<double> GetNumberPerExpert(string name) => Get<double[]>(name);

    /// <summary>Every parameter's value, given or default, as invariant text (what a merge's provenance records).</summary>
    public IReadOnlyDictionary<string, string> ToText() => _values.ToDictionary(
        kv => kv.Key,
        kv => kv.Value switch
        {
            double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
            double[] values => string.Join(",", values.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture))),
            var other => Convert.ToString(other, System.Globalization.CultureInfo.InvariantCulture) ?? "",
        },
        StringComparer.Ordinal);

    private T Get<T>(string name) =>
        _values.TryGetValue(name, out object? value) && value is T typed
            ? typed
            : throw new ArgumentException($"Merge method '{_methodName}' declares no {typeof(T).Name} parameter '{name}'.", nameof(name));
}
