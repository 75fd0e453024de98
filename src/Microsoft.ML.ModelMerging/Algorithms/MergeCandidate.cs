using System.Globalization;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>One merge method with one setting of its parameters, e.g. <c>ties keep=0.2 lambda=0.4</c>.</summary>
public sealed record MergeCandidate(string Method, IReadOnlyDictionary<string, string> Parameters)
{
    /// <summary>A candidate of method <paramref name="method"/> with every parameter at its default.</summary>
    public MergeCandidate(string method) : this(method, new Dictionary<string, string>()) { }

    /// <summary>The method, then its parameters as <c>name=value</c> in name order, e.g. <c>ties keep=0.2 lambda=0.4</c>.</summary>
    public override string ToString() =>
        Parameters.Count == 0 ? Method : Method + " " + string.Join(" ", Parameters.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));

    /// <summary>Every combination of the given values, e.g. lambda ∈ {0.1..1} × keep ∈ {0.1, 0.2}.</summary>
    public static IReadOnlyList<MergeCandidate> Grid(string method, IReadOnlyDictionary<string, double[]> values)
    {
        IEnumerable<Dictionary<string, string>> combos = new[] { new Dictionary<string, string>() };
        foreach (var (name, options) in values)
            combos = combos.SelectMany(c => options.Select(v => new Dictionary<string, string>(c) { [name] = v.ToString("R", CultureInfo.InvariantCulture) }));
        return combos.Select(c => new MergeCandidate(method, c)).ToList();
    }

    /// <summary>Every combination of the given values as the text a user would type; one candidate of defaults when empty.</summary>
    public static IReadOnlyList<MergeCandidate> Grid(string method, IReadOnlyDictionary<string, IReadOnlyList<string>> values)
    {
        IEnumerable<Dictionary<string, string>> combos = new[] { new Dictionary<string, string>() };
        foreach (var (name, options) in values)
            combos = combos.SelectMany(c => options.Select(v => new Dictionary<string, string>(c) { [name] = v }));
        return combos.Select(c => new MergeCandidate(method, c)).ToList();
    }
}
