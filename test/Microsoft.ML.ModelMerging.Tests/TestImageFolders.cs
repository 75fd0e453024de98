using SkiaSharp;

namespace Microsoft.ML.ModelMerging.Tests;

/// <summary>Small image folders (one sub-folder per class) drawn by the tests: tasks the project has never seen.</summary>
internal static class TestImageFolders
{
    /// <summary>Rings and bars, white on black, 28×28, at random places, sizes and stroke widths.</summary>
    public static void Shapes(string root, int perClass, int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < perClass; i++)
        {
            foreach (var shape in new[] { "ring", "bar" })
            {
                using var bitmap = new SKBitmap(28, 28);
                using var canvas = new SKCanvas(bitmap);
                canvas.Clear(SKColors.Black);
                using var paint = new SKPaint { Color = SKColors.White, IsAntialias = true, StrokeWidth = 2 + random.Next(3), Style = SKPaintStyle.Stroke };
                float cx = 14 + random.Next(-3, 4), cy = 14 + random.Next(-3, 4), r = 6 + random.Next(4);
                if (shape == "ring") canvas.DrawCircle(cx, cy, r, paint);
                else canvas.DrawLine(cx - r, cy - r + random.Next(2 * (int)r), cx + r, cy - r + random.Next(2 * (int)r), paint);
                Save(bitmap, Path.Combine(root, shape, $"{i}.png"));
            }
        }
    }

    /// <summary>Stripes in three orientations with random period and phase, 40×40 (larger than the model's input).</summary>
    public static void Stripes(string root, int perClass, int seed)
    {
        var random = new Random(seed);
        for (int i = 0; i < perClass; i++)
        {
            foreach (var orientation in new[] { "horizontal", "vertical", "diagonal" })
            {
                using var bitmap = new SKBitmap(40, 40);
                int period = 6 + random.Next(5), phase = random.Next(period);
                for (int y = 0; y < 40; y++)
                    for (int x = 0; x < 40; x++)
                    {
                        int coordinate = orientation switch { "horizontal" => y, "vertical" => x, _ => x + y };
                        byte value = (coordinate + phase) % period < period / 2 ? (byte)230 : (byte)20;
                        bitmap.SetPixel(x, y, new SKColor(value, value, value));
                    }

                Save(bitmap, Path.Combine(root, orientation, $"{i}.png"));
            }
        }
    }

    private static void Save(SKBitmap bitmap, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, png.ToArray());
    }
}
