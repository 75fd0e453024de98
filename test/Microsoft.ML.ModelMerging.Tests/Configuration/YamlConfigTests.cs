using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Configuration;

namespace Microsoft.ML.ModelMerging.Tests.Configuration;

[TestClass]
public sealed class YamlConfigTests
{
    /// <summary>Parses <paramref name="yaml"/> and compares it with the JSON a YAML 1.2 reader gives for it (all scalars as strings).</summary>
    private static void AssertParsesTo(string json, string yaml)
    {
        var expected = JsonNode.Parse(json);
        var actual = YamlConfig.Parse(yaml);
        Assert.IsTrue(JsonNode.DeepEquals(expected, actual), $"expected {expected?.ToJsonString()}, got {actual?.ToJsonString()}");
    }

    /// <summary>The error starts with the place of the mistake and says what it is.</summary>
    private static void AssertRejected(string yaml, string place, string what)
    {
        var error = Assert.ThrowsExactly<FormatException>(() => YamlConfig.Parse(yaml));
        StringAssert.StartsWith(error.Message, place + ": ", yaml);
        StringAssert.Contains(error.Message, what, yaml);
    }

    [TestMethod]
    public void MappingsOfScalarsAndNestedMappings()
    {
        AssertParsesTo("""{"method": "ties", "lambda": "0.3", "empty": null, "tilde": null, "null": null, "spaced key": "a b  c"}""", """
            method: ties
            lambda: 0.3
            empty:
            tilde: ~
            null: null
            spaced key: a b  c
            """);
        AssertParsesTo("""{"outer": {"inner": {"deep": "1"}, "next": "2"}, "last": "3"}""", """
            outer:
              inner:
                  deep: 1
              next: 2
            last: 3
            """);
        // A colon not followed by a space is part of the value.
        AssertParsesTo("""{"url": "http://host:80/a", "time": "12:30"}""", "url: http://host:80/a\ntime: 12:30\n");
    }

    [TestMethod]
    public void SequencesOfScalarsAndOfMappingsAtAnyNesting()
    {
        AssertParsesTo("""
            {"experts": [{"path": "a.safetensors", "weight": "1.5"}, "b.safetensors", {"path": "c", "extra": {"k": "v"}}],
             "exclude": ["x", "y"]}
            """, """
            experts:
              - path: a.safetensors
                weight: 1.5
              - b.safetensors
              - path: c
                extra:
                  k: v
            exclude:
            - x
            - y
            """);
        // Sequences of mappings holding sequences of mappings, nested sequences, and an item opened by a lone dash.
        AssertParsesTo("""
            {"jobs": [{"name": "a", "steps": [{"run": "1"}, {"run": "2", "with": ["p", "q"]}]}, {"name": "b", "steps": []}],
             "matrix": [["1", "2"], ["3", ["4", "5"]]], "loose": [{"k": "v"}, null]}
            """, """
            jobs:
            - name: a
              steps:
              - run: 1
              - run: 2
                with:
                  - p
                  - q
            - name: b
              steps: []
            matrix:
            - - 1
              - 2
            - - 3
              - - 4
                - 5
            loose:
              -
                k: v
              -
            """);
    }

    [TestMethod]
    public void FlowCollections()
    {
        AssertParsesTo("""
            {"list": ["a", "b c", "d, e", "f"], "map": {"lambda": "0.3", "keep": "0.2"},
             "nested": {"a": ["1", {"b": "2"}], "c": {}}, "empty": [], "none": [null, "x"]}
            """, """
            list: [a, b c, "d, e", 'f']
            map: {lambda: 0.3, keep: 0.2}
            nested: { a: [1, {b: 2}], c: {} }
            empty: []
            none: [~, x]
            """);
        AssertParsesTo("""[{"path": "a", "weight": "2"}, ["x"]]""", "- {path: a, weight: 2}\n- [x]\n");
    }

    [TestMethod]
    public void QuotedScalarsAndEscapes()
    {
        AssertParsesTo("""
            {"double": "tab\there \"quoted\" back\\slash\nline", "single": "it's 'single'", "regex": "^head\\.",
             "literal": "^head\\.", "hash": "# not a comment", "colon": "a: b", "null": "null", "tilde": "~", "empty": "",
             "unicode": "é€😀", "apostrophe": "it's plain", "key with: colon": "v"}
            """, """
            double: "tab\there \"quoted\" back\\slash\nline"
            single: 'it''s ''single'''
            regex: "^head\\."
            literal: '^head\.'
            hash: "# not a comment"
            colon: 'a: b'
            null: 'null'
            tilde: "~"
            empty: ""
            unicode: "\xe9\u20AC\U0001F600"
            apostrophe: it's plain
            "key with: colon": v
            """);
    }

    [TestMethod]
    public void CommentsAndDocumentMarkers()
    {
        AssertParsesTo("""{"a": "1", "b": "x#y", "c": "say \"# kept\"", "d": "it's # kept", "e": ["1", "2"]}""", """
            # leading comment
            ---
            a: 1   # trailing comment
              # an indented comment line is not a block
            b: x#y
            c: "say \"# kept\"" # after an escaped quote
            d: 'it''s # kept'   # after a doubled quote
            e:
              - 1 # one
            # between items
              - 2
            """);
        Assert.IsNull(YamlConfig.Parse("# only a comment\n\n"));
    }

    [TestMethod]
    public void WindowsLineEndingsAreRead()
    {
        AssertParsesTo("""{"a": "1", "b": ["x"]}""", "a: 1\r\nb:\r\n  - x\r\n");
    }

    [TestMethod]
    public void ErrorsNameTheLineAndColumn()
    {
        AssertRejected("a: 1\n\tb: 2\n", "line 1, column 4", "tab character");
        AssertRejected("a: 1\nb: 2\na: 3\n", "line 3, column 1", "key 'a' appears twice.");
        AssertRejected("a: 1\njust text\n", "line 2, column 1", "did not find expected key");
        AssertRejected("# x\na: \"open\n", "line 2, column 4", "quoted scalar");
        AssertRejected("a: 'open\n", "line 1, column 4", "quoted scalar");
        AssertRejected("a: [1, 2\nb: 3\n", "line 1, column 4", "the '[' opened here is not closed");
        AssertRejected("a:\n  b: {c: 1\n", "line 2, column 6", "the '{' opened here is not closed");
        AssertRejected("a: 1\n  b: 2\n", "line 2, column 4", "invalid mapping");
        AssertRejected("a:\n    b: 1\n  c: 2\n", "line 3, column 3", "did not find expected key");
        AssertRejected("a: \"x\" y\n", "line 1, column 8", "did not find expected key");
        AssertRejected("a: \"\\q\"\n", "line 1, column 4", "unknown escape");
        AssertRejected("a: \"\\u12\"\n", "line 1, column 4", "hexadecimal");
        AssertRejected("experts:\n  - path: a\n      weight: 2\n", "line 3, column 13", "invalid mapping");
        AssertRejected("pair: a: b\n", "line 1, column 8", "invalid mapping");
        AssertRejected("a: 1\nb: *anchor\n", "line 2, column 4", "alias '*anchor' names no anchor defined before it.");
        AssertRejected("? [a]\n: 1\n", "line 1, column 3", "a key must be a single value");
        AssertRejected("a: 1\n---\nb: 2\n", "line 2, column 1", "one YAML document");
        AssertRejected("a: @x\n", "line 1, column 4", "cannot start any token");
    }

    /// <summary>What the hand-written subset refused is standard YAML, read as such.</summary>
    [TestMethod]
    public void AnchorsAliasesTagsAndBlockScalars()
    {
        AssertParsesTo("""
            {"defaults": {"lambda": "0.3", "keep": "0.2"}, "parameters": {"lambda": "0.3", "keep": "0.2"},
             "experts": ["a", "a"], "tagged": "1", "no": "null", "empty": null,
             "literal": "line one\nline two\n", "folded": "one two\n", "implicit": {"c 1": null}}
            """, """
            defaults: &d {lambda: 0.3, keep: 0.2}
            parameters: *d
            experts: [&e a, *e]
            tagged: !!str 1
            no: !!str null
            empty: !!null ''
            literal: |
              line one
              line two
            folded: >
              one
              two
            implicit: {c 1}
            """);
    }
}
