using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Microsoft.ML.ModelMerging.Configuration;

/// <summary>
/// The YAML subset merge configs use, read into a JSON tree: block mappings and sequences by indentation, flow
/// <c>[a, b]</c> and <c>{k: v}</c> collections (on one line), plain / single- / double-quoted scalars and <c>#</c>
/// comments. Every scalar is a string (an unquoted <c>~</c> or <c>null</c>, or nothing, is null); the reader of the config
/// decides its type. Anchors, aliases, tags and block scalars are not supported and fail with the line number.
/// </summary>
public static class SimpleYaml
{
    private sealed record Line(int Number, int Indent, string Text);

    public static JsonNode? Parse(string text)
    {
        var lines = new List<Line>();
        var raw = text.Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < raw.Length; i++)
        {
            string content = StripComment(raw[i]).TrimEnd();
            if (content.Trim().Length == 0 || content.Trim() == "---") continue;
            if (content.Contains('\t') && content.TrimStart(' ').Length != content.TrimStart(' ', '\t').Length)
                throw new FormatException($"line {i + 1}: tabs cannot indent YAML.");
            int indent = content.Length - content.TrimStart(' ').Length;
            lines.Add(new Line(i + 1, indent, content.Trim()));
        }
        if (lines.Count == 0) return null;
        int position = 0;
        var node = ParseBlock(lines, ref position, lines[0].Indent);
        if (position < lines.Count) throw new FormatException($"line {lines[position].Number}: unexpected indentation.");
        return node;
    }

    private static JsonNode? ParseBlock(List<Line> lines, ref int position, int indent)
    {
        return lines[position].Text.StartsWith("- ", StringComparison.Ordinal) || lines[position].Text == "-"
            ? ParseSequence(lines, ref position, indent)
            : ParseMapping(lines, ref position, indent);
    }

    private static JsonArray ParseSequence(List<Line> lines, ref int position, int indent)
    {
        var array = new JsonArray();
        while (position < lines.Count && lines[position].Indent == indent && (lines[position].Text.StartsWith("- ", StringComparison.Ordinal) || lines[position].Text == "-"))
        {
            var line = lines[position];
            string rest = line.Text.Length > 1 ? line.Text[2..].TrimStart() : "";
            if (rest.Length == 0)
            {
                position++;
                array.Add(position < lines.Count && lines[position].Indent > indent ? ParseBlock(lines, ref position, lines[position].Indent) : null);
            }
            else if (rest.StartsWith("- ", StringComparison.Ordinal) || rest == "-")
            {
                // "- - a" opens a nested sequence whose further items are indented to where the inner "-" starts.
                int innerIndent = indent + (line.Text.Length - rest.Length);
                lines[position] = line with { Indent = innerIndent, Text = rest };
                array.Add(ParseSequence(lines, ref position, innerIndent));
            }
            else if (FindMappingColon(rest) >= 0 && !rest.StartsWith('{') && !rest.StartsWith('['))
            {
                // "- key: value" opens a mapping whose further keys are indented to where "key" starts.
                int innerIndent = indent + (line.Text.Length - rest.Length);
                lines[position] = line with { Indent = innerIndent, Text = rest };
                array.Add(ParseMapping(lines, ref position, innerIndent));
            }
            else
            {
                array.Add(ParseInline(rest, line.Number));
                position++;
            }
        }
        return array;
    }

    private static JsonObject ParseMapping(List<Line> lines, ref int position, int indent)
    {
        var obj = new JsonObject();
        while (position < lines.Count && lines[position].Indent == indent)
        {
            var line = lines[position];
            int colon = FindMappingColon(line.Text);
            if (colon < 0) throw new FormatException($"line {line.Number}: expected 'key: value', got '{line.Text}'.");
            string key = Unquote(line.Text[..colon].Trim(), line.Number);
            string rest = line.Text[(colon + 1)..].Trim();
            if (obj.ContainsKey(key)) throw new FormatException($"line {line.Number}: key '{key}' appears twice.");
            position++;
            if (rest.Length > 0)
                obj[key] = ParseInline(rest, line.Number);
            else if (position < lines.Count && lines[position].Indent > indent)
                obj[key] = ParseBlock(lines, ref position, lines[position].Indent);
            else if (position < lines.Count && lines[position].Indent == indent && lines[position].Text.StartsWith("- ", StringComparison.Ordinal))
                obj[key] = ParseSequence(lines, ref position, indent); // a sequence may sit at its key's indentation
            else
                obj[key] = null;
        }
        if (position < lines.Count && lines[position].Indent > indent)
            throw new FormatException($"line {lines[position].Number}: unexpected indentation.");
        return obj;
    }

    private static JsonNode? ParseInline(string text, int lineNumber)
    {
        int index = 0;
        var node = ParseFlow(text, ref index, lineNumber, topLevel: true);
        SkipSpaces(text, ref index);
        if (index < text.Length) throw new FormatException($"line {lineNumber}: unexpected '{text[index..]}'.");
        return node;
    }

    private static JsonNode? ParseFlow(string text, ref int i, int lineNumber, bool topLevel)
    {
        SkipSpaces(text, ref i);
        if (i >= text.Length) return null;
        char c = text[i];
        if (c == '[')
        {
            i++;
            var array = new JsonArray();
            SkipSpaces(text, ref i);
            if (i < text.Length && text[i] == ']') { i++; return array; }
            while (true)
            {
                array.Add(ParseFlow(text, ref i, lineNumber, topLevel: false));
                SkipSpaces(text, ref i);
                if (i < text.Length && text[i] == ',') { i++; continue; }
                if (i < text.Length && text[i] == ']') { i++; return array; }
                throw new FormatException($"line {lineNumber}: unterminated '[' (a flow sequence must close on the line it opens).");
            }
        }
        if (c == '{')
        {
            i++;
            var obj = new JsonObject();
            SkipSpaces(text, ref i);
            if (i < text.Length && text[i] == '}') { i++; return obj; }
            while (true)
            {
                string key = ReadScalar(text, ref i, lineNumber, stopAtColon: true, out _);
                SkipSpaces(text, ref i);
                if (i >= text.Length || text[i] != ':') throw new FormatException($"line {lineNumber}: expected ':' after '{key}'.");
                i++;
                obj[key] = ParseFlow(text, ref i, lineNumber, topLevel: false);
                SkipSpaces(text, ref i);
                if (i < text.Length && text[i] == ',') { i++; SkipSpaces(text, ref i); continue; }
                if (i < text.Length && text[i] == '}') { i++; return obj; }
                throw new FormatException($"line {lineNumber}: unterminated '{{' (a flow mapping must close on the line it opens).");
            }
        }
        if (c is '&' or '*' or '!' or '|' or '>' or '%' or '@' or '`')
        {
            string what = c switch
            {
                '&' => "anchors",
                '*' => "aliases",
                '!' => "tags",
                '|' or '>' => "block scalars",
                _ => $"plain values starting with '{c}' (quote them)",
            };
            throw new FormatException($"line {lineNumber}: YAML {what} are not supported here.");
        }

        string scalar = ReadScalar(text, ref i, lineNumber, stopAtColon: false, out bool quoted, inFlow: !topLevel);
        return !quoted && scalar is "~" or "null" or "Null" or "NULL" ? null : JsonValue.Create(scalar);
    }

    private static string ReadScalar(string text, ref int i, int lineNumber, bool stopAtColon, out bool quoted, bool inFlow = true)
    {
        SkipSpaces(text, ref i);
        quoted = i < text.Length && (text[i] == '"' || text[i] == '\'');
        if (quoted)
        {
            char quote = text[i++];
            var value = new StringBuilder();
            while (true)
            {
                if (i >= text.Length) throw new FormatException($"line {lineNumber}: unterminated {quote}-quoted string.");
                char c = text[i++];
                if (c == quote)
                {
                    if (quote == '\'' && i < text.Length && text[i] == '\'') { value.Append('\''); i++; continue; }
                    return value.ToString();
                }
                if (c == '\\' && quote == '"')
                {
                    ReadEscape(text, ref i, lineNumber, value);
                    continue;
                }
                value.Append(c);
            }
        }
        int start = i;
        while (i < text.Length && !(inFlow && (text[i] == ',' || text[i] == ']' || text[i] == '}')) &&
               !(stopAtColon && text[i] == ':')) i++;
        return text[start..i].Trim();
    }

    /// <summary>A double-quoted escape (the backslash is already read): YAML's \0 \a \b \t \n \v \f \r \e, space, \" \/ \\, \xXX, \uXXXX, \UXXXXXXXX.</summary>
    private static void ReadEscape(string text, ref int i, int lineNumber, StringBuilder value)
    {
        if (i >= text.Length) throw new FormatException($"line {lineNumber}: unterminated \"-quoted string.");
        char e = text[i++];
        int digits = e switch { 'x' => 2, 'u' => 4, 'U' => 8, _ => 0 };
        if (digits > 0)
        {
            if (i + digits > text.Length || !int.TryParse(text.AsSpan(i, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code) ||
                code > 0x10FFFF || code is >= 0xD800 and <= 0xDFFF)
                throw new FormatException($"line {lineNumber}: escape '\\{e}' needs {digits} hexadecimal digits.");
            value.Append(char.ConvertFromUtf32(code));
            i += digits;
            return;
        }

        value.Append(e switch
        {
            '0' => '\0', 'a' => '\a', 'b' => '\b', 't' => '\t', 'n' => '\n', 'v' => '\v', 'f' => '\f', 'r' => '\r', 'e' => '\u001b',
            ' ' => ' ', '"' => '"', '/' => '/', '\\' => '\\',
            _ => throw new FormatException($"line {lineNumber}: unknown escape '\\{e}' in a \"-quoted string."),
        });
    }

    private static string Unquote(string key, int lineNumber)
    {
        int i = 0;
        string unquoted = ReadScalar(key, ref i, lineNumber, stopAtColon: false, out bool quoted, inFlow: false);
        if (quoted && i < key.Length) throw new FormatException($"line {lineNumber}: unexpected '{key[i..]}' after the quoted key.");
        return unquoted;
    }

    /// <summary>The colon that separates a key from its value: outside quotes and brackets, followed by a space or the end.</summary>
    private static int FindMappingColon(string text)
    {
        char quote = '\0';
        int depth = 0;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (quote != '\0') { SkipQuoted(text, ref i, ref quote); continue; }
            if (OpensQuote(text, i)) quote = c;
            else if (c is '[' or '{') depth++;
            else if (c is ']' or '}') depth--;
            else if (c == ':' && depth == 0 && (i + 1 == text.Length || text[i + 1] == ' ')) return i;
        }
        return -1;
    }

    private static string StripComment(string line)
    {
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quote != '\0') { SkipQuoted(line, ref i, ref quote); continue; }
            if (OpensQuote(line, i)) quote = c;
            else if (c == '#' && (i == 0 || line[i - 1] is ' ' or '\t')) return line[..i];
        }
        return line;
    }

    /// <summary>A quote opens a quoted scalar only where a scalar starts (in "it's" it is a plain character).</summary>
    private static bool OpensQuote(string text, int i) =>
        text[i] is '"' or '\'' && (i == 0 || text[i - 1] is ' ' or '\t' or '[' or '{' or ',');

    /// <summary>
    /// Inside a quoted scalar at <paramref name="i"/>: steps over an escape (backslash in double quotes, doubled quote in
    /// single quotes) and closes the quote at its end.
    /// </summary>
    private static void SkipQuoted(string text, ref int i, ref char quote)
    {
        if (quote == '"' && text[i] == '\\') i++;
        else if (quote == '\'' && text[i] == '\'' && i + 1 < text.Length && text[i + 1] == '\'') i++;
        else if (text[i] == quote) quote = '\0';
    }

    private static void SkipSpaces(string text, ref int i)
    {
        while (i < text.Length && text[i] == ' ') i++;
    }

}
