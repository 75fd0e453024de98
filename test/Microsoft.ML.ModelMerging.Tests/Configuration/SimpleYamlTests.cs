using System.Text.Json.Nodes;
using Microsoft.ML.ModelMerging.Configuration;

namespace Microsoft.ML.ModelMerging.Tests.Configuration;

[TestClass]
public sealed class SimpleYamlTests
{
    /// <summary>Parses <paramref name="yaml"/> and compares it with the JSON a YAML 1.2 reader gives for it (all scalars as strings).</summary>
    private static void AssertParsesTo(string json, string yaml)
    {
        var expected = JsonNode.Parse(json);
        var actual = SimpleYaml.Parse(yaml);
        Assert.IsTrue(JsonNode.DeepEquals(expected, actual), $"expected {expected?.ToJsonString()}, got {actual?.ToJsonString()}");
    }

    private static void AssertRejected(string yaml, string message)
    {
        var error = Assert.ThrowsExactly<FormatException>(() => SimpleYaml.Parse(yaml));
        Assert.AreEqual(message, error.Message);
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
        // A colon not followed by a space is part of the value, as are further colons.
        AssertParsesTo("""{"url": "http://host:80/a", "time": "12:30", "pair": "a: b"}""", "url: http://host:80/a\ntime: 12:30\npair: a: b\n");
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
        Assert.IsNull(SimpleYaml.Parse("# only a comment\n\n"));
    }

    [TestMethod]
    public void WindowsLineEndingsAreRead()
    {
        AssertParsesTo("""{"a": "1", "b": ["x"]}""", "a: 1\r\nb:\r\n  - x\r\n");
    }

    [TestMethod]
    public void ErrorsNameTheLine()
    {
        AssertRejected("a: 1\n\tb: 2\n", "line 2: tabs cannot indent YAML.");
        AssertRejected("a: 1\nb: 2\na: 3\n", "line 3: key 'a' appears twice.");
        AssertRejected("a: 1\njust text\n", "line 2: expected 'key: value', got 'just text'.");
        AssertRejected("# x\na: \"open\n", "line 2: unterminated \"-quoted string.");
        AssertRejected("a: 'open\n", "line 1: unterminated '-quoted string.");
        AssertRejected("a: [1, 2\nb: 3\n", "line 1: unterminated '[' (a flow sequence must close on the line it opens).");
        AssertRejected("a:\n  b: {c: 1\n", "line 2: unterminated '{' (a flow mapping must close on the line it opens).");
        AssertRejected("a: {c 1}\n", "line 1: expected ':' after 'c 1'.");
        AssertRejected("a: 1\n  b: 2\n", "line 2: unexpected indentation.");
        AssertRejected("a:\n    b: 1\n  c: 2\n", "line 3: unexpected indentation.");
        AssertRejected("a: \"x\" y\n", "line 1: unexpected 'y'.");
        AssertRejected("a: \"\\q\"\n", "line 1: unknown escape '\\q' in a \"-quoted string.");
        AssertRejected("a: \"\\u12\"\n", "line 1: escape '\\u' needs 4 hexadecimal digits.");
        AssertRejected("experts:\n  - path: a\n      weight: 2\n", "line 3: unexpected indentation.");
    }

    [TestMethod]
    [DataRow("a: &anchor 1", "line 1: YAML anchors are not supported here.")]
    [DataRow("a: 1\nb: *anchor", "line 2: YAML aliases are not supported here.")]
    [DataRow("a: !!str 1", "line 1: YAML tags are not supported here.")]
    [DataRow("a: |\n  text", "line 1: YAML block scalars are not supported here.")]
    [DataRow("a: >\n  text", "line 1: YAML block scalars are not supported here.")]
    [DataRow("a: [1, *x]", "line 1: YAML aliases are not supported here.")]
    [DataRow("a: @x", "line 1: YAML plain values starting with '@' (quote them) are not supported here.")]
    public void UnsupportedFeaturesAreErrorsNotSilentStrings(string yaml, string message)
    {
        AssertRejected(yaml, message);
    }
}
