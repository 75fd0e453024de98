using System.IO.Compression;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>Opening data files that may or may not be gzip-compressed, and naming them in every error.</summary>
internal static class DataFile
{
    /// <summary>Opens <paramref name="path"/> for reading, decompressing it when it starts with the gzip signature (whatever its extension).</summary>
    public static Stream OpenRead(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Data file '{path}' does not exist.", path);
        }

        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        Span<byte> signature = stackalloc byte[2];
        int read = file.ReadAtLeast(signature, 2, throwOnEndOfStream: false);
        file.Position = 0;
        if (read == 2 && signature[0] == 0x1F && signature[1] == 0x8B)
        {
            return new BufferedStream(new GZipStream(file, CompressionMode.Decompress), 1 << 16);
        }

        return file;
    }

    /// <summary>Runs a parse of <paramref name="path"/>, turning a decompression or I/O failure into an error that names the file.</summary>
    public static T Parse<T>(string path, Func<Stream, T> parse)
    {
        try
        {
            using var stream = OpenRead(path);
            return parse(stream);
        }
        catch (InvalidDataException e) when (!e.Message.Contains(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"'{path}' is corrupt: {e.Message}", e);
        }
        catch (IOException e) when (e is not FileNotFoundException && !e.Message.Contains(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"'{path}' could not be read: {e.Message}", e);
        }
    }
}
