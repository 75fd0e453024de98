namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Fashion-MNIST articles (gray 28×28) as coloured product photographs: the article dyed a random colour with its own
/// shading kept, on a studio backdrop of another colour with a soft gradient and vignette, in 32×32 RGB.
/// </summary>
internal static class StudioPhotoRenderer
{
    public static ImageDataset Render(ImageDataset gray, int seed, string name) =>
        ImageStyler.Restyle(gray, seed, name, (raster, image, random) =>
        {
            Rgb top = ProceduralImages.Colour(random, 0.05f, 0.6f, 0.35f, 0.95f);
            Rgb bottom = ProceduralImages.Jitter(top, random, 0.25f);
            raster.Fill((x, y) =>
            {
                float r2 = ((x - 16) * (x - 16) + (y - 16) * (y - 16)) / 512f;
                return Rgb.Lerp(top, bottom, y / 32f).Scale(1.05f - 0.35f * r2);
            });
            Rgb dye = ProceduralImages.Colour(random, 0.2f, 1f, 0.35f, 1f);
            int dx = random.NextInt(5), dy = random.NextInt(5);
            // The article keeps its shading: dark parts of the gray image become dark dye.
            int side = image.Length == 28 * 28 ? 28 : (int)MathF.Sqrt(image.Length);
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side; x++)
                {
                    float g = image[y * side + x];
                    float alpha = ProceduralImages.SmoothStep(0.02f, 0.12f, g);
                    raster.Blend(x + dx, y + dy, dye.Scale(0.35f + 0.75f * g), alpha);
                }
            raster.AddNoise(random, 0.02f);
        });
}
