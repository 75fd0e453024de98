using System.Text;

namespace Microsoft.ML.ModelMerging.Benchmarks.Fuzzing;

/// <summary>One tensor as the reference parse sees it: offsets relative to the data section.</summary>
public sealed record ReferenceTensor(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>A file the reference parse accepted.</summary>
public sealed record ReferenceFile(IReadOnlyList<ReferenceTensor> Tensors, IReadOnlyDictionary<string, string> Metadata, long DataStart);

/// <summary>
/// An independent strict parse of a safetensors file, written from the format's definition (RFC 8259 JSON, RFC 3629
/// UTF-8) without System.Text.Json or any code of the library, so the fuzzer can check the library's reader against it.
/// Rules: u64 LE header length ≤ 100,000,000 inside the file; the header is UTF-8 and one JSON object; keys unique;
/// <c>__metadata__</c> an object of strings; every other key an object with exactly dtype, shape, data_offsets; integers
/// are plain digits below 2^63; the non-zero dimensions times the element size fit in 63 bits; the tensors tile the data
/// section exactly. Returns null for a file it rejects.
/// </summary>
public static class ReferenceSafeTensorsParser
{
    private static readonly Dictionary<string, int> ElementSizes = new(StringComparer.Ordinal)
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    public static ReferenceFile? Parse(byte[] file)
    {
        if (file.Length < 8) return null;
        ulong n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | file[i];
        if (n > 100_000_000 || n > (ulong)(file.Length - 8)) return null;
        var header = file.AsSpan(8, (int)n);
        if (!IsUtf8(header)) return null;
        object? root;
        try
        {
            var reader = new Json(Encoding.UTF8.GetString(header));
            root = reader.Document();
        }
        catch (FormatException)
        {
            return null;
        }
        if (root is not List<KeyValuePair<string, object?>> members) return null;

        long dataLength = file.Length - 8 - (long)n;
        var tensors = new List<ReferenceTensor>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, value) in members)
        {
            if (!keys.Add(key)) return null;
            if (key == "__metadata__")
            {
                if (value is not List<KeyValuePair<string, object?>> entries) return null;
                foreach (var (k, v) in entries)
                    if (v is not string s || !metadata.TryAdd(k, s)) return null;
                continue;
            }
            var tensor = Tensor(key, value);
            if (tensor is null) return null;
            tensors.Add(tensor);
        }

        long cursor = 0;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin != cursor) return null;
            cursor = t.End;
        }
        if (cursor != dataLength) return null;
        return new ReferenceFile(tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList(), metadata, 8 + (long)n);
    }

    private static ReferenceTensor? Tensor(string name, object? value)
    {
        if (value is not List<KeyValuePair<string, object?>> fields || fields.Count != 3) return null;
        var byName = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in fields)
            if (!byName.TryAdd(k, v)) return null;
        if (!byName.TryGetValue("dtype", out var dtype) || dtype is not string d || !ElementSizes.TryGetValue(d, out int size)) return null;
        if (!byName.TryGetValue("shape", out var shapeValue) || shapeValue is not List<object?> dims) return null;
        if (!byName.TryGetValue("data_offsets", out var offsetsValue) || offsetsValue is not List<object?> { Count: 2 } offsets) return null;
        var shape = new long[dims.Count];
        for (int i = 0; i < dims.Count; i++)
            if (Integer(dims[i]) is not long dim) return null;
            else shape[i] = dim;
        if (Integer(offsets[0]) is not long begin || Integer(offsets[1]) is not long end || end < begin) return null;
        System.Numerics.BigInteger bytes = size, nonZero = size;
        foreach (long dim in shape)
        {
            bytes *= dim;
            if (dim != 0) nonZero *= dim;
        }
        if (nonZero > long.MaxValue || bytes != end - begin) return null;
        return new ReferenceTensor(name, d, shape, begin, end);
    }

    /// <summary>A JSON number token that is a plain run of digits below 2^63.</summary>
    private static long? Integer(object? token) =>
        token is Number { Text: var text } && text.All(char.IsAsciiDigit) && long.TryParse(text, out long v) ? v : null;

    private sealed record Number(string Text);

    /// <summary>RFC 3629: shortest forms only, no surrogates, nothing above U+10FFFF.</summary>
    private static bool IsUtf8(ReadOnlySpan<byte> bytes)
    {
        for (int i = 0; i < bytes.Length;)
        {
            byte b = bytes[i];
            int length; int min; int cp;
            if (b < 0x80) { i++; continue; }
            if ((b & 0xE0) == 0xC0) { length = 2; min = 0x80; cp = b & 0x1F; }
            else if ((b & 0xF0) == 0xE0) { length = 3; min = 0x800; cp = b & 0x0F; }
            else if ((b & 0xF8) == 0xF0) { length = 4; min = 0x10000; cp = b & 0x07; }
            else return false;
            if (i + length > bytes.Length) return false;
            for (int k = 1; k < length; k++)
            {
                if ((bytes[i + k] & 0xC0) != 0x80) return false;
                cp = (cp << 6) | (bytes[i + k] & 0x3F);
            }
            if (cp < min || cp > 0x10FFFF || cp is >= 0xD800 and <= 0xDFFF) return false;
            i += length;
        }
        return true;
    }

    /// <summary>Recursive-descent JSON: objects as member lists (duplicates kept), arrays as lists, numbers as their text.</summary>
    private sealed class Json(string text)
    {
        private int _at;
        private int _depth;

        public object? Document()
        {
            Space();
            var value = Value();
            Space();
            if (_at != text.Length) throw new FormatException("trailing characters");
            return value;
        }

        private void Space()
        {
            while (_at < text.Length && text[_at] is ' ' or '\t' or '\n' or '\r') _at++;
        }

        private char Peek() => _at < text.Length ? text[_at] : throw new FormatException("end of input");

        private void Expect(char c)
        {
            if (Peek() != c) throw new FormatException($"expected {c}");
            _at++;
        }

        private object? Value()
        {
            // System.Text.Json's default depth limit is 64; deeper input is rejected here as well as there.
            if (++_depth > 64) throw new FormatException("too deep");
            try
            {
                switch (Peek())
                {
                    case '{': return Object();
                    case '[': return Array();
                    case '"': return String();
                    case 't': Word("true"); return true;
                    case 'f': Word("false"); return false;
                    case 'n': Word("null"); return null;
                    default: return NumberToken();
                }
            }
            finally
            {
                _depth--;
            }
        }

        private void Word(string word)
        {
            if (string.CompareOrdinal(text, _at, word, 0, word.Length) != 0) throw new FormatException("bad literal");
            _at += word.Length;
        }

        private List<KeyValuePair<string, object?>> Object()
        {
            Expect('{');
            var members = new List<KeyValuePair<string, object?>>();
            Space();
            if (Peek() == '}') { _at++; return members; }
            while (true)
            {
                Space();
                string key = String();
                Space();
                Expect(':');
                Space();
                members.Add(new(key, Value()));
                Space();
                if (Peek() == ',') { _at++; continue; }
                Expect('}');
                return members;
            }
        }

        private List<object?> Array()
        {
            Expect('[');
            var items = new List<object?>();
            Space();
            if (Peek() == ']') { _at++; return items; }
            while (true)
            {
                Space();
                items.Add(Value());
                Space();
                if (Peek() == ',') { _at++; continue; }
                Expect(']');
                return items;
            }
        }

        private Number NumberToken()
        {
            int start = _at;
            if (Peek() == '-') _at++;
            if (Peek() == '0') _at++;
            else if (Peek() is >= '1' and <= '9') Digits();
            else throw new FormatException("bad number");
            if (_at < text.Length && text[_at] == '.') { _at++; if (!char.IsAsciiDigit(Peek())) throw new FormatException("bad fraction"); Digits(); }
            if (_at < text.Length && text[_at] is 'e' or 'E')
            {
                _at++;
                if (Peek() is '+' or '-') _at++;
                if (!char.IsAsciiDigit(Peek())) throw new FormatException("bad exponent");
                Digits();
            }
            return new Number(text[start.._at]);
        }

        private void Digits()
        {
            while (_at < text.Length && char.IsAsciiDigit(text[_at])) _at++;
        }

        private string String()
        {
            Expect('"');
            var value = new StringBuilder();
            while (true)
            {
                char c = Peek();
                _at++;
                if (c == '"') return value.ToString();
                if (c < 0x20) throw new FormatException("control character in string");
                if (c != '\\') { value.Append(c); continue; }
                char e = Peek();
                _at++;
                switch (e)
                {
                    case '"': case '\\': case '/': value.Append(e); break;
                    case 'b': value.Append('\b'); break;
                    case 'f': value.Append('\f'); break;
                    case 'n': value.Append('\n'); break;
                    case 'r': value.Append('\r'); break;
                    case 't': value.Append('\t'); break;
                    case 'u':
                        int unit = Hex();
                        if (unit is >= 0xDC00 and <= 0xDFFF) throw new FormatException("lone low surrogate");
                        if (unit is >= 0xD800 and <= 0xDBFF)
                        {
                            if (Peek() != '\\') throw new FormatException("lone high surrogate");
                            _at++;
                            Expect('u');
                            int low = Hex();
                            if (low is < 0xDC00 or > 0xDFFF) throw new FormatException("lone high surrogate");
                            value.Append((char)unit).Append((char)low);
                        }
                        else
                        {
                            value.Append((char)unit);
                        }
                        break;
                    default: throw new FormatException("bad escape");
                }
            }
        }

        private int Hex()
        {
            if (_at + 4 > text.Length) throw new FormatException("short \\u escape");
            int v = 0;
            for (int k = 0; k < 4; k++)
            {
                char h = text[_at++];
                v = v * 16 + (h is >= '0' and <= '9' ? h - '0' : h is >= 'a' and <= 'f' ? h - 'a' + 10 : h is >= 'A' and <= 'F' ? h - 'A' + 10 : throw new FormatException("bad hex"));
            }
            return v;
        }
    }
}
