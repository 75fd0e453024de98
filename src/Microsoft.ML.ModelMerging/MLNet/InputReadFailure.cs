using Microsoft.ML.Data;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// Says what went wrong when the input column cannot be read. Upstream transforms fail inside ML.NET's parallel cursor
/// ("Splitter/consolidator worker encountered exception while consuming source data"), and <c>LoadImages</c> gives an
/// undecodable file as "Invalid input stream contents", naming neither the row nor the file.
/// </summary>
internal static class InputReadFailure
{
    /// <summary>Rows of text columns searched for the image file that does not decode.</summary>
    private const int SearchedRows = 100_000;

    /// <summary>
    /// An exception naming the column, the row the cursor had reached and the innermost cause; when a text column of the
    /// input names image files (<c>LoadImages</c>' source), the first that ML.NET cannot load is named too.
    /// </summary>
    public static InvalidDataException Explain(IDataView input, string inputColumn, long row, Exception error)
    {
        Exception cause = error;
        while (cause.InnerException is not null) cause = cause.InnerException;
        string? file = null, fileError = null;
        try
        {
            (file, fileError) = FirstUnloadableFile(input);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The search is a courtesy: the original failure is what is reported.
        }

        return new InvalidDataException(file is null
            ? $"MergeExperts: reading input column '{inputColumn}' failed at row {row} (ML.NET's cursor reads ahead, so the cause may be a later row): {cause.Message}. " +
                "If the column comes from LoadImages, an image file may be missing, empty or not an image."
            : $"MergeExperts: reading input column '{inputColumn}' failed: ML.NET cannot load the image file '{file}' ({fileError}); remove or replace it.", error);
    }

    private static (string? File, string? Error) FirstUnloadableFile(IDataView input)
    {
        // Only pass-through text columns are requested, so no image is decoded while they are read.
        var texts = input.Schema.Where(c => !c.IsHidden && c.Type is TextDataViewType).ToArray();
        if (texts.Length == 0) return (null, null);
        using DataViewRowCursor cursor = input.GetRowCursor(texts);
        var getters = texts.Select(cursor.GetGetter<ReadOnlyMemory<char>>).ToArray();
        ReadOnlyMemory<char> value = default;
        for (int rows = 0; rows < SearchedRows && cursor.MoveNext(); rows++)
        {
            foreach (var getter in getters)
            {
                getter(ref value);
                string path = value.ToString();
                if (path.Length == 0 || path.IndexOfAny(Path.GetInvalidPathChars()) >= 0 || !File.Exists(path)) continue;
                try
                {
                    // From a stream, as LoadImages reads it: CreateFromFile reports every undecodable file as an "Invalid path".
                    using var stream = File.OpenRead(path);
                    if (stream.Length == 0) return (Path.GetFullPath(path), "the file is empty");
                    using var image = MLImage.CreateFromStream(stream);
                }
                catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or InvalidOperationException)
                {
                    return (Path.GetFullPath(path), e.Message);
                }
            }
        }

        return (null, null);
    }
}
