namespace Microsoft.ML.ModelMerging.Models;

/// <summary>
/// How a set of named tensors (a checkpoint) lines up with what a <see cref="VisionTransformerConfig"/> expects:
/// which names match, which are missing, unexpected, or present with the wrong shape.
/// </summary>
internal sealed class StateLoadReport
{
    /// <summary>A tensor whose name is expected but whose shape is not.</summary>
    public sealed record ShapeMismatch(string Name, long[] Expected, long[] Actual)
    {
        public override string ToString() =>
            $"{Name}: expected {NamedTensorShape.Format(Expected)}, got {NamedTensorShape.Format(Actual)}";
    }

    private StateLoadReport(List<string> matched, List<string> missing, List<string> unexpected, List<ShapeMismatch> misshapen, List<string> ignored)
    {
        Matched = matched;
        Missing = missing;
        Unexpected = unexpected;
        Misshapen = misshapen;
        Ignored = ignored;
    }

    /// <summary>Names present with the expected shape (these are the ones a load copies).</summary>
    public IReadOnlyList<string> Matched { get; }

    /// <summary>Names the model expects but the source lacks.</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>Names in the source the model does not know.</summary>
    public IReadOnlyList<string> Unexpected { get; }

    public IReadOnlyList<ShapeMismatch> Misshapen { get; }

    /// <summary>Names skipped on purpose: HF's position-id buffer and a CLIPModel's text tower.</summary>
    public IReadOnlyList<string> Ignored { get; }

    /// <summary>True when every expected tensor is present with its shape and nothing unknown is left over.</summary>
    public bool IsComplete => Missing.Count == 0 && Unexpected.Count == 0 && Misshapen.Count == 0;

    /// <summary>Compares tensor shapes by name (shapes only, so a streaming reader can check before loading data).</summary>
    public static StateLoadReport Compare(VisionTransformerConfig config, IEnumerable<KeyValuePair<string, long[]>> actualShapes)
    {
        var expected = VisionTransformerNames.Shapes(config).ToDictionary(s => s.Name, s => s.Shape, StringComparer.Ordinal);
        List<string> matched = [], unexpected = [], ignored = [];
        List<ShapeMismatch> misshapen = [];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in actualShapes)
        {
            seen.Add(name);
            if (expected.TryGetValue(name, out long[]? expectedShape))
            {
                if (expectedShape.AsSpan().SequenceEqual(shape))
                {
                    matched.Add(name);
                }
                else
                {
                    misshapen.Add(new ShapeMismatch(name, expectedShape, shape));
                }
            }
            else if (VisionTransformerNames.IsIgnoredWhenLoading(name))
            {
                ignored.Add(name);
            }
            else
            {
                unexpected.Add(name);
            }
        }

        var missing = expected.Keys.Where(name => !seen.Contains(name)).ToList();
        return new StateLoadReport(matched, missing, unexpected, misshapen, ignored);
    }

    /// <summary>Throws an <see cref="InvalidDataException"/> naming the offending tensors unless <see cref="IsComplete"/>.</summary>
    /// <param name="source">What was being loaded (a file name, "state"), for the message.</param>
    public void ThrowIfIncomplete(string source)
    {
        if (!IsComplete)
        {
            throw new InvalidDataException($"Tensors of '{source}' do not match the Vision Transformer config: {Describe()}.");
        }
    }

    /// <summary>One line per problem kind, each naming (at most 20) tensors.</summary>
    public string Describe()
    {
        var parts = new List<string>();
        if (Missing.Count > 0)
        {
            parts.Add($"{Missing.Count} missing ({List(Missing)})");
        }

        if (Unexpected.Count > 0)
        {
            parts.Add($"{Unexpected.Count} unexpected ({List(Unexpected)})");
        }

        if (Misshapen.Count > 0)
        {
            parts.Add($"{Misshapen.Count} with the wrong shape ({List(Misshapen.Select(m => m.ToString()).ToList())})");
        }

        return parts.Count == 0 ? $"all {Matched.Count} tensors match" : string.Join("; ", parts);
    }

    private static string List(IReadOnlyList<string> names)
    {
        const int shown = 20;
        string text = string.Join(", ", names.Take(shown));
        return names.Count > shown ? $"{text}, ... and {names.Count - shown} more" : text;
    }

    public override string ToString() => Describe();
}
