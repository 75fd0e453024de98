using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>What <c>mlmerge inspect</c> shows: every tensor's name, dtype and shape, the parameter count and the metadata.</summary>
public sealed record CheckpointSummary(
    string Source,
    IReadOnlyList<string> Files,
    IReadOnlyList<TensorEntry> Tensors,
    IReadOnlyDictionary<string, string> Metadata,
    long ParameterCount,
    long ByteCount)
{
    /// <summary>The summary of an open checkpoint.</summary>
    public static CheckpointSummary Of(Checkpoint checkpoint) => new(
        checkpoint.Source, checkpoint.Files, checkpoint.Tensors, checkpoint.Metadata, checkpoint.ParameterCount, checkpoint.ByteCount);

    /// <summary>Opens a checkpoint (file, index or directory, as <see cref="Checkpoint.Open"/>) and summarises it.</summary>
    /// <exception cref="CheckpointFormatException">The checkpoint is malformed.</exception>
    public static CheckpointSummary Read(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        return Of(checkpoint);
    }

    /// <summary>Indented JSON (what <c>mlmerge inspect --json</c> prints): source, files, parameter and byte counts, metadata and every tensor.</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions
        {
            Indented = true,
            // Plain quotes, apostrophes and non-ASCII names: the default encoder writes " as \u0022, correct but unreadable.
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }))
        {
            json.WriteStartObject();
            json.WriteString("source", Source);
            json.WriteStartArray("files");
            foreach (var f in Files) json.WriteStringValue(f);
            json.WriteEndArray();
            json.WriteNumber("parameters", ParameterCount);
            json.WriteNumber("bytes", ByteCount);
            json.WriteStartObject("metadata");
            foreach (var (k, v) in Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(k, v);
            json.WriteEndObject();
            json.WriteStartArray("tensors");
            foreach (var t in Tensors)
            {
                json.WriteStartObject();
                json.WriteString("name", t.Name);
                json.WriteString("dtype", t.DType.ToHeaderName());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteNumber("parameters", t.ElementCount);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The plain-text listing <c>mlmerge inspect</c> prints.</summary>
    public string ToText()
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        text.AppendLine(inv, $"{Source}");
        if (Files.Count > 1) text.AppendLine(inv, $"  {Files.Count} shards");
        int nameWidth = Math.Max(6, Tensors.Select(t => t.Name.Length).DefaultIfEmpty(0).Max());
        text.AppendLine(inv, $"{"tensor".PadRight(nameWidth)}  {"dtype",-5}  {"shape",-20}  {"parameters",12}");
        foreach (var t in Tensors)
            text.AppendLine(inv, $"{t.Name.PadRight(nameWidth)}  {t.DType.ToHeaderName(),-5}  {t.ShapeText,-20}  {t.ElementCount,12:N0}");
        text.AppendLine(inv, $"{Tensors.Count} tensors, {ParameterCount:N0} parameters, {ByteCount:N0} bytes of data");
        if (Metadata.Count > 0)
        {
            text.AppendLine("metadata:");
            foreach (var (k, v) in Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                text.AppendLine(inv, $"  {k} = {(v.Length > 200 ? v[..200] + "…" : v)}");
        }
        return text.ToString();
    }
}
