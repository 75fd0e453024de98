using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Microsoft.ML.ModelMerging.Configuration;

/// <summary>
/// Reads a YAML config (one document, YAML 1.2 through YamlDotNet) into the JSON tree that JSON configs give, so one
/// reader checks both. Every scalar stays a string (the reader of the config decides its type); an unquoted <c>~</c>,
/// <c>null</c> or nothing is null, unless tagged <c>!!str</c>. Anchors and aliases are expanded. Errors are
/// <see cref="FormatException"/>s that start with the line (and column) of the mistake.
/// </summary>
internal static class YamlConfig
{
    private const string StrTag = "tag:yaml.org,2002:str";
    private const string NullTag = "tag:yaml.org,2002:null";

    /// <summary>The document's root as JSON, or null for an empty document (only comments, or nothing).</summary>
    public static JsonNode? Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var reader = new Reader(new Parser(new StringReader(text)));
        try
        {
            return reader.ReadDocument();
        }
        catch (YamlException e) when (reader.OpenFlow is { } open && e.Message.Contains("flow", StringComparison.Ordinal))
        {
            throw Error(open.At, $"the '{open.Bracket}' opened here is not closed ({WithoutLocation(e.Message)})", e);
        }
        catch (YamlException e)
        {
            throw Error(e.Start, WithoutLocation(e.Message), e);
        }
        catch (InvalidOperationException e) when (reader.OpenFlow is { } open)
        {
            // YamlDotNet's scanner gives up this way when the text ends inside a flow collection.
            throw Error(open.At, $"the '{open.Bracket}' opened here is not closed.", e);
        }
    }

    private sealed class Reader(IParser parser)
    {
        private readonly Dictionary<string, JsonNode?> anchors = new(StringComparer.Ordinal);
        private readonly Stack<(char Bracket, Mark At)> flows = new();

        /// <summary>The innermost '[' or '{' being read, for errors that only say the text ended.</summary>
        public (char Bracket, Mark At)? OpenFlow => flows.Count > 0 ? flows.Peek() : null;

        public JsonNode? ReadDocument()
        {
            parser.Consume<StreamStart>();
            if (parser.TryConsume<StreamEnd>(out _)) return null;
            parser.Consume<DocumentStart>();
            var root = ReadNode();
            parser.Consume<DocumentEnd>();
            if (parser.Accept<DocumentStart>(out var second))
                throw Error(second.Start, "a config holds one YAML document ('---' starts a second one).");
            parser.Consume<StreamEnd>();
            return root;
        }

        private JsonNode? ReadNode()
        {
            if (parser.TryConsume<AnchorAlias>(out var alias))
            {
                // An alias repeats the anchored value; a JSON tree needs its own copy of it.
                if (!anchors.TryGetValue(alias.Value.Value, out var anchored))
                    throw Error(alias.Start, $"alias '*{alias.Value.Value}' names no anchor defined before it.");
                return anchored?.DeepClone();
            }

            JsonNode? node;
            AnchorName anchor;
            if (parser.TryConsume<Scalar>(out var scalar))
            {
                anchor = scalar.Anchor;
                node = IsNull(scalar) ? null : JsonValue.Create(scalar.Value);
            }
            else if (parser.TryConsume<SequenceStart>(out var sequenceStart))
            {
                anchor = sequenceStart.Anchor;
                var array = new JsonArray();
                if (sequenceStart.Style == SequenceStyle.Flow) flows.Push(('[', sequenceStart.Start));
                while (!parser.TryConsume<SequenceEnd>(out _))
                    array.Add(ReadNode());
                if (sequenceStart.Style == SequenceStyle.Flow) flows.Pop();
                node = array;
            }
            else if (parser.TryConsume<MappingStart>(out var mappingStart))
            {
                anchor = mappingStart.Anchor;
                var obj = new JsonObject();
                if (mappingStart.Style == MappingStyle.Flow) flows.Push(('{', mappingStart.Start));
                while (!parser.TryConsume<MappingEnd>(out _))
                {
                    if (!parser.TryConsume<Scalar>(out var key))
                        throw Error(parser.Current!.Start, "a key must be a single value, not a list or a mapping.");
                    if (obj.ContainsKey(key.Value))
                        throw Error(key.Start, $"key '{key.Value}' appears twice.");
                    obj[key.Value] = ReadNode();
                }
                if (mappingStart.Style == MappingStyle.Flow) flows.Pop();
                node = obj;
            }
            else
            {
                var unexpected = parser.Current;
                throw Error(unexpected?.Start ?? Mark.Empty, $"unexpected {unexpected?.GetType().Name ?? "end of input"}.");
            }

            if (!anchor.IsEmpty) anchors[anchor.Value] = node;
            return node;
        }
    }

    /// <summary>YAML 1.2's core schema: plain ~, null, Null, NULL and the empty value are null; quoted values never are.</summary>
    private static bool IsNull(Scalar scalar)
    {
        if (!scalar.Tag.IsEmpty) return scalar.Tag.Value == NullTag || (scalar.Tag.Value != StrTag && scalar.Value.Length == 0);
        return scalar.Style == ScalarStyle.Plain && scalar.Value is "" or "~" or "null" or "Null" or "NULL";
    }

    private static FormatException Error(Mark at, string message, Exception? inner = null) =>
        new(at.Line > 0 ? $"line {at.Line}, column {at.Column}: {message}" : message, inner);

    /// <summary>YamlDotNet prefixes its messages with "(Line: l, Col: c, Idx: i) - (…): "; ours say the place once, in words.</summary>
    private static string WithoutLocation(string message)
    {
        const string separator = "): ";
        int end = message.StartsWith("(Line:", StringComparison.Ordinal) ? message.IndexOf(separator, StringComparison.Ordinal) : -1;
        return end < 0 ? message : message[(end + separator.Length)..];
    }
}
