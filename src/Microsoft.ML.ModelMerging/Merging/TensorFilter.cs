using Microsoft.ML.ModelMerging.Checkpoints;
using System.Text.RegularExpressions;
using TorchSharp;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Decides which tensors are merged; the others are copied from the base model untouched. Excluded: non-floating
/// tensors (integer buffers, masks) and names matching an exclusion pattern — by default the task heads
/// (<c>^head\.</c>, <c>classifier</c>) and <c>position_ids</c>, plus any <c>--exclude REGEX</c>.
/// </summary>
public sealed class TensorFilter
{
    private static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(1);

    private readonly Regex[] _patterns;

    /// <param name="excludePatterns">More regular expressions (searched anywhere in the name) to exclude.</param>
    /// <param name="includeDefaultPatterns">False to replace, not extend, <see cref="DefaultExcludePatterns"/>.</param>
    public TensorFilter(IEnumerable<string>? excludePatterns = null, bool includeDefaultPatterns = true)
    {
        var patterns = (includeDefaultPatterns ? DefaultExcludePatterns : []).Concat(excludePatterns ?? []).ToArray();
        _patterns = new Regex[patterns.Length];
        for (int i = 0; i < patterns.Length; i++)
        {
            try
            {
                _patterns[i] = new Regex(patterns[i], RegexOptions.CultureInvariant, MatchTimeout);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"Exclusion pattern '{patterns[i]}' is not a valid regular expression: {e.Message}", nameof(excludePatterns), e);
            }
        }

        ExcludePatterns = patterns;
    }

    /// <summary>Classification heads are per task and never merged; position ids are integer indices.</summary>
    public static IReadOnlyList<string> DefaultExcludePatterns { get; } = [@"^head\.", "classifier", "position_ids"];

    /// <summary>The filter with only <see cref="DefaultExcludePatterns"/>.</summary>
    public static TensorFilter Default { get; } = new();

    /// <summary>Every exclusion pattern in effect (defaults first when included).</summary>
    public IReadOnlyList<string> ExcludePatterns { get; }

    /// <summary>True when <paramref name="name"/> matches an exclusion pattern, whatever its dtype.</summary>
    public bool IsExcludedByName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _patterns.Any(pattern => pattern.IsMatch(name));
    }

    /// <summary>True when the tensor is merged; false when it is copied from the base.</summary>
    public bool ShouldMerge(string name, torch.ScalarType dtype) => ExclusionReason(name, dtype) is null;

    /// <summary>Why the tensor is copied from the base (for logs), or null when it is merged.</summary>
    public string? ExclusionReason(string name, torch.ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!ScalarTypes.IsFloatingPoint(dtype))
        {
            return $"dtype {dtype} is not floating";
        }

        var pattern = _patterns.FirstOrDefault(p => p.IsMatch(name));
        return pattern is null ? null : $"name matches /{pattern}/";
    }
}
