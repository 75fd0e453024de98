using System.Globalization;
using System.Text;

namespace Microsoft.ML.ModelMerging.Benchmarks.Fuzzing;

/// <summary>
/// Makes a valid safetensors file at random, then breaks it: byte-level damage (bit flips, truncation, a changed length
/// prefix) and header-level damage (offsets, shapes, dtypes, duplicate keys and fields, huge and negative numbers,
/// invalid UTF-8, escaped lone surrogates, deep nesting). Deterministic for a seed.
/// </summary>
public sealed class SafeTensorsMutator(int seed)
{
    private static readonly (string Name, int Size)[] DTypes =
        [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1), ("U8", 1), ("BOOL", 1)];

    public static readonly string[] Mutations =
    [
        "none", "bit-flip", "truncate", "extend", "length-prefix", "offsets", "shape", "dtype", "duplicate-key", "duplicate-field",
        "huge-number", "negative-number", "invalid-utf8", "lone-surrogate", "deep-nesting", "metadata", "splice",
    ];

    private readonly Random _random = new(seed);

    /// <summary>A file and the mutations applied to it (one to three; "none" leaves a valid file).</summary>
    public (byte[] File, string Mutation) Next()
    {
        var (header, data) = ValidFile();
        string kind = Mutations[_random.Next(Mutations.Length)];
        int count = kind == "none" ? 0 : 1 + (_random.Next(4) == 0 ? _random.Next(1, 3) : 0);
        var applied = new List<string>();
        byte[] headerBytes = Encoding.UTF8.GetBytes(header);
        byte[]? file = null;
        for (int m = 0; m < count; m++)
        {
            string k = m == 0 ? kind : Mutations[1 + _random.Next(Mutations.Length - 1)];
            applied.Add(k);
            if (k is "bit-flip" or "truncate" or "extend" or "length-prefix") file = Bytes(file ?? Assemble(headerBytes, data), k);
            else if (file is null) headerBytes = Header(headerBytes, k);
            else applied[^1] += "(skipped)";
        }
        return (file ?? Assemble(headerBytes, data), count == 0 ? "none" : string.Join("+", applied));
    }

    private static byte[] Assemble(byte[] header, byte[] data) => [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. data];

    private (string Header, byte[] Data) ValidFile()
    {
        int tensors = _random.Next(0, 5);
        var json = new StringBuilder("{");
        if (_random.Next(2) == 0)
            json.Append("\"__metadata__\":{\"format\":\"pt\",\"note\":\"").Append(_random.Next(2) == 0 ? "caf\\u00e9 \\ud83d\\ude00" : "x").Append("\"},");
        var data = new List<byte>();
        for (int t = 0; t < tensors; t++)
        {
            var (dtype, size) = DTypes[_random.Next(DTypes.Length)];
            var shape = Enumerable.Range(0, _random.Next(0, 4)).Select(_ => (long)_random.Next(0, 5)).ToArray();
            long bytes = shape.Aggregate((long)size, (a, d) => a * d);
            json.Append(CultureInfo.InvariantCulture, $"\"layer.{t}.{(_random.Next(3) == 0 ? "w\\u00e9ight" : "weight")}\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{data.Count},{data.Count + bytes}]}}");
            json.Append(t + 1 < tensors ? "," : "");
            var block = new byte[bytes];
            _random.NextBytes(block);
            data.AddRange(block);
        }
        if (json[^1] == ',') json.Length--;
        json.Append('}');
        while (json.Length % 8 != 0) json.Append(' ');
        return (json.ToString(), data.ToArray());
    }

    private byte[] Bytes(byte[] file, string kind)
    {
        switch (kind)
        {
            case "bit-flip":
                for (int i = 0, n = _random.Next(1, 4); i < n && file.Length > 0; i++) file[_random.Next(file.Length)] ^= (byte)(1 << _random.Next(8));
                return file;
            case "truncate":
                return file.Length == 0 ? file : file[.._random.Next(file.Length)];
            case "extend":
                return [.. file, .. new byte[_random.Next(1, 9)]];
            default: // length-prefix (a file already cut below 8 bytes has none)
                if (file.Length < 8) return file;
                ulong length = BitConverter.ToUInt64(file);
                ulong[] choices = [length + 1, length - 1, 0, ulong.MaxValue, 100_000_001, (ulong)_random.Next(0, file.Length)];
                BitConverter.GetBytes(choices[_random.Next(choices.Length)]).CopyTo(file, 0);
                return file;
        }
    }

    private static readonly string[] HugeNumbers =
        ["9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616", "4611686018427387904", "1e300", "1.5", "00", "-0", "1E2"];

    private byte[] Header(byte[] header, string kind)
    {
        string text = Encoding.UTF8.GetString(header);
        switch (kind)
        {
            case "offsets":
                return Utf8(ReplaceNumberAfter(text, "data_offsets\":[", RandomNumber()));
            case "shape":
                return Utf8(ReplaceNumberAfter(text, "shape\":[", RandomNumber()));
            case "dtype":
                string[] names = ["F32", "F8_E4M3", "f32", "", "BOOL ", "I64", "U64", "BF16", "F16"];
                return Utf8(ReplaceFirst(text, "\"dtype\":\"", $"\"dtype\":\"{names[_random.Next(names.Length)]}", skipValue: true));
            case "duplicate-key":
                int entry = text.IndexOf("\"layer.", StringComparison.Ordinal);
                int close = entry < 0 ? -1 : text.IndexOf("}", entry, StringComparison.Ordinal);
                // No whole entry to repeat (an earlier mutation may have cut it): repeat the metadata key instead.
                if (close < 0) return Utf8(text.Insert(Math.Min(1, text.Length), "\"__metadata__\":{},\"__metadata__\":{},"));
                return Utf8(text.Insert(close + 1, "," + text[entry..(close + 1)]));
            case "duplicate-field":
                string[] fields = ["\"dtype\":\"F32\",", "\"shape\":[1],", "\"data_offsets\":[0,0],", "\"extra\":1,"];
                int at = text.IndexOf(":{\"dtype\"", StringComparison.Ordinal);
                return at < 0 ? Utf8(text) : Utf8(text.Insert(at + 2, fields[_random.Next(fields.Length)]));
            case "huge-number":
                return Utf8(ReplaceNumberAfter(text, _random.Next(2) == 0 ? "shape\":[" : "data_offsets\":[", HugeNumbers[_random.Next(HugeNumbers.Length)]));
            case "negative-number":
                return Utf8(ReplaceNumberAfter(text, _random.Next(2) == 0 ? "shape\":[" : "data_offsets\":[", "-" + _random.Next(0, 100)));
            case "invalid-utf8":
                byte[][] bad = [[0xFF], [0xC3, 0x28], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0xE2, 0x82], [0xEF, 0xBB, 0xBF]];
                int position = Encoding.UTF8.GetByteCount(text.AsSpan(0, QuotedPosition(text)));
                if (Encoding.UTF8.GetByteCount(text) != header.Length) position = Math.Min(position, header.Length); // already not UTF-8
                return [.. header[..position], .. bad[_random.Next(bad.Length)], .. header[position..]];
            case "lone-surrogate":
                string[] escapes = ["\\ud800", "\\udfff", "\\ud83dx", "\\ude00\\ud83d", "\\uD800\\u0041"];
                return Utf8(text.Insert(QuotedPosition(text), escapes[_random.Next(escapes.Length)]));
            case "deep-nesting":
                int depth = _random.Next(2) == 0 ? _random.Next(60, 70) : _random.Next(1, 5000);
                string nested = new string('[', depth) + new string(']', depth);
                return Utf8(_random.Next(2) == 0 ? text.Insert(Math.Min(1, text.Length), $"\"deep\":{nested},") : ReplaceFirst(text, "\"shape\":", "\"shape\":" + nested + ",\"x\":", skipValue: false));
            case "metadata":
                string[] values = ["{\"k\":1}", "{\"k\":null}", "[]", "\"s\"", "{\"k\":\"a\",\"k\":\"b\"}", "{\"k\":{\"n\":\"v\"}}", "{}"];
                return Utf8(text.Insert(Math.Min(1, text.Length), $"\"__metadata__\":{values[_random.Next(values.Length)]},"));
            default: // splice: a random slice of the header moved elsewhere
                if (text.Length < 4) return Utf8(text);
                int from = _random.Next(text.Length - 1), length = _random.Next(1, Math.Min(16, text.Length - from));
                string piece = text.Substring(from, length);
                string rest = text.Remove(from, length);
                return Utf8(rest.Insert(_random.Next(rest.Length + 1), piece));
        }
    }

    private string RandomNumber() => _random.Next(4) switch
    {
        0 => _random.Next(0, 64).ToString(CultureInfo.InvariantCulture),
        1 => ((long)_random.Next() << _random.Next(0, 32)).ToString(CultureInfo.InvariantCulture),
        2 => HugeNumbers[_random.Next(HugeNumbers.Length)],
        _ => "-" + _random.Next(1, 9),
    };

    private static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);

    /// <summary>A character index just inside some string of the header (0 when there is none).</summary>
    private int QuotedPosition(string text)
    {
        var quotes = Enumerable.Range(0, text.Length).Where(i => text[i] == '"').ToList();
        return quotes.Count == 0 ? 0 : quotes[_random.Next(quotes.Count)] + 1;
    }

    /// <summary>Replaces one number right after an occurrence of <paramref name="marker"/> (or after the comma that follows it).</summary>
    private string ReplaceNumberAfter(string text, string marker, string number)
    {
        var hits = Occurrences(text, marker);
        if (hits.Count == 0) return text;
        int start = hits[_random.Next(hits.Count)] + marker.Length;
        if (_random.Next(2) == 0 && text.IndexOf(',', start) is int comma and >= 0 && comma < text.IndexOf(']', start)) start = comma + 1;
        int end = start;
        while (end < text.Length && (char.IsAsciiDigit(text[end]) || text[end] == '-')) end++;
        return text[..start] + number + text[end..];
    }

    private string ReplaceFirst(string text, string marker, string replacement, bool skipValue)
    {
        var hits = Occurrences(text, marker);
        if (hits.Count == 0) return text;
        int at = hits[_random.Next(hits.Count)];
        int end = at + marker.Length;
        if (skipValue && text.IndexOf('"', end) is int quote) end = quote < 0 ? text.Length : quote; // an unclosed value runs to the end
        return text[..at] + replacement + text[end..];
    }

    private static List<int> Occurrences(string text, string marker)
    {
        var hits = new List<int>();
        for (int i = text.IndexOf(marker, StringComparison.Ordinal); i >= 0; i = text.IndexOf(marker, i + 1, StringComparison.Ordinal)) hits.Add(i);
        return hits;
    }
}
