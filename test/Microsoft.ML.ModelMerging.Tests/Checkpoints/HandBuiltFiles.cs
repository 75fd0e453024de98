using System.Text;

namespace Microsoft.ML.ModelMerging.Tests.Checkpoints;

/// <summary>Writes safetensors files byte by byte from the format's definition, independent of the library's writer.</summary>
internal static class HandBuiltFiles
{
    public static string Write(string path, string headerJson, byte[] data, ulong? declaredHeaderLength = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        using var file = File.Create(path);
        file.Write(BitConverter.GetBytes(declaredHeaderLength ?? (ulong)header.Length));
        file.Write(header);
        file.Write(data);
        return path;
    }

    public static byte[] Floats(params float[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();
}
