using System.Globalization;
using System.Security.Cryptography;

namespace Microsoft.ML.ModelMerging.Checkpoints;

/// <summary>
/// A stable identity of a checkpoint's content, cheap for any size: SHA-256 over its headers (names, dtypes, shapes,
/// offsets, metadata) and file sizes, and SHA-256 over those plus three windows of every tensor's values (start, middle,
/// end; 4 KiB each). Two fine-tuned experts differ in nearly every value, so they differ there; hashing every byte would
/// cost as much as reading the checkpoint.
/// </summary>
public sealed record CheckpointFingerprint(long Bytes, string HeaderSha256, string ContentSha256)
{
    /// <summary>Bytes read from each tensor's data (at its start, middle and end).</summary>
    public const int WindowBytes = 4096;

    /// <summary>What <see cref="ContentSha256"/> covers, in words (recorded beside it).</summary>
    public const string Scope = "headers, file sizes, and 3 windows of 4 KiB of every tensor's data (start, middle, end)";

    /// <summary>The fingerprint of an open checkpoint (every file of a sharded one).</summary>
    public static CheckpointFingerprint Of(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var prefix = new byte[8];
        long bytes = 0;
        foreach (var file in checkpoint.Files.Order(StringComparer.Ordinal))
        {
            using var stream = File.OpenRead(file);
            stream.ReadExactly(prefix);
            var header = new byte[Math.Min(BitConverter.ToInt64(prefix), SafeTensorsHeader.MaxHeaderBytes)];
            stream.ReadExactly(header);
            sha.AppendData(prefix);
            sha.AppendData(header);
            sha.AppendData(BitConverter.GetBytes(stream.Length));
            bytes += stream.Length;
        }

        var headerHash = sha.GetHashAndReset();
        sha.AppendData(headerHash);
        var window = new byte[WindowBytes];
        foreach (var entry in checkpoint.Tensors)
        {
            long length = entry.ByteLength;
            foreach (long start in new[] { 0, (length / 2) - (WindowBytes / 2), length - WindowBytes }.Select(x => Math.Clamp(x, 0, Math.Max(0, length - WindowBytes))).Distinct())
            {
                var part = window.AsSpan(0, (int)Math.Min(WindowBytes, length - start));
                checkpoint.ReadBytes(entry.Name, start, part);
                sha.AppendData(part);
            }
        }

        return new CheckpointFingerprint(bytes, Convert.ToHexStringLower(headerHash), Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    /// <summary>The fingerprint of the checkpoint at <paramref name="path"/> (a file, a sharded index or a directory holding either).</summary>
    public static CheckpointFingerprint Of(string path)
    {
        using var checkpoint = Checkpoint.Open(path);
        return Of(checkpoint);
    }

    /// <summary>SHA-256 of a small file's every byte (a head, an adapter config).</summary>
    public static string OfSmallFile(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));

    /// <summary>SHA-256 of a JSON file's content, not its layout: parsed and written again without whitespace.</summary>
    public static string OfJsonFile(string path)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path));
        return Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(node?.ToJsonString() ?? "null")));
    }

    /// <summary>The fingerprint as the text a manifest records: bytes and content hash.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Bytes}:{ContentSha256}");
}
