using System.Text.Json;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// Strict reads of header strings and integers. <see cref="JsonElement.GetString"/> throws InvalidOperationException for
/// an escaped lone surrogate (<c>"\ud800"</c>); these helpers turn that into a <see cref="CheckpointFormatException"/>
/// naming the file and tensor, and accept integers only as plain digits (no sign, fraction or exponent).
/// </summary>
internal static class JsonText
{
    public static string Name(JsonProperty property, string path, string? tensor)
    {
        try
        {
            return property.Name;
        }
        catch (InvalidOperationException)
        {
            throw new CheckpointFormatException(path, tensor, "a header key is not valid Unicode (an escaped lone surrogate).");
        }
    }

    public static string String(JsonElement element, string path, string? tensor, string what)
    {
        try
        {
            return element.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw new CheckpointFormatException(path, tensor, $"{what} is not valid Unicode (an escaped lone surrogate).");
        }
    }

    public static bool TryNonNegativeInteger(JsonElement element, out long value)
    {
        value = 0;
        if (element.ValueKind != JsonValueKind.Number) return false;
        string raw = element.GetRawText();
        foreach (char c in raw)
            if (c is < '0' or > '9') return false;
        return long.TryParse(raw, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out value);
    }
}
