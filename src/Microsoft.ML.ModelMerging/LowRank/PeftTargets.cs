using System.Text.RegularExpressions;
using Microsoft.ML.ModelMerging.Models;

namespace Microsoft.ML.ModelMerging.LowRank;

/// <summary>
/// PEFT's <c>target_modules</c> when it is not a list of short names (a pattern, or names matched by their end), and its
/// <c>exclude_modules</c>, applied to the model's module names (<c>vision_model.encoder.layers.N.self_attn.q_proj</c>) as PEFT applies them.
/// </summary>
internal static class PeftTargets
{
    /// <summary>A pattern read as Python's <c>re.fullmatch</c> reads it.</summary>
    public static Regex Pattern(string path, string pattern, string field)
    {
        try
        {
            return new Regex($"^(?:{pattern})\\z", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {field} '{pattern}' is not a regular expression this reader can use: {e.Message}", e);
        }
    }

    /// <summary>
    /// The short names and layers of the block linear layers <paramref name="selects"/> picks (layer index, full name). The
    /// adapter must adapt the same modules in every layer it adapts, as <see cref="LoraOptions"/> states it.
    /// </summary>
    /// <returns>The targets in model order, and the layers (null for every layer).</returns>
    public static (IReadOnlyList<string> Targets, IReadOnlyList<int>? Layers) Resolve(string path, string what, VisionTransformerConfig? model,
        Func<int, string, bool> selects)
    {
        if (model is null)
            throw new InvalidDataException($"{path}: {what} is matched against the model's module names; read the adapter with the model it adapts.");
        var selected = new List<(int Layer, string Module)>();
        for (int layer = 0; layer < model.Layers; layer++)
        {
            foreach (string prefix in VisionTransformerNames.Layer(layer).Linears)
            {
                if (selects(layer, prefix)) selected.Add((layer, LoraOptions.ShortName(prefix)));
            }
        }
        if (selected.Count == 0)
            throw new InvalidDataException($"{path}: {what} selects no linear layer of the vision encoder (module names such as {VisionTransformerNames.Layer(0).QProj}).");
        var modules = selected.Select(s => s.Module).Distinct().ToList();
        var layers = selected.Select(s => s.Layer).Distinct().ToList();
        if (selected.Count != modules.Count * layers.Count)
            throw new InvalidDataException($"{path}: {what} adapts other modules in some layers than in others " +
                $"({string.Join("; ", selected.GroupBy(s => s.Layer).Select(g => $"layer {g.Key}: {string.Join(", ", g.Select(s => s.Module))}"))}); " +
                "this reader adapts the same modules in every adapted layer.");
        return (modules, layers.Count == model.Layers ? null : layers);
    }
}
