namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// Seeded value noise: random values on a lattice, smoothly interpolated, summed over octaves. Renderers use it for
/// terrain, paper, fabric and clutter; a fixed lattice per instance makes the same seed give the same field.
/// </summary>
internal sealed class ValueNoise
{
    private const int Lattice = 64;
    private readonly float[] values = new float[Lattice * Lattice];

    public ValueNoise(SeededRandom random)
    {
        for (int i = 0; i < values.Length; i++) values[i] = (float)random.NextDouble();
    }

    /// <summary>Noise in [0, 1] at (x, y) in lattice cells (smoothstep interpolation, wraps every 64 cells).</summary>
    public float At(float x, float y)
    {
        int x0 = (int)MathF.Floor(x), y0 = (int)MathF.Floor(y);
        float fx = x - x0, fy = y - y0;
        fx = fx * fx * (3 - 2 * fx);
        fy = fy * fy * (3 - 2 * fy);
        float V(int i, int j) => values[((j % Lattice + Lattice) % Lattice) * Lattice + ((i % Lattice + Lattice) % Lattice)];
        float top = V(x0, y0) + (V(x0 + 1, y0) - V(x0, y0)) * fx;
        float bottom = V(x0, y0 + 1) + (V(x0 + 1, y0 + 1) - V(x0, y0 + 1)) * fx;
        return top + (bottom - top) * fy;
    }

    /// <summary>Fractal sum of <paramref name="octaves"/> octaves at base frequency <paramref name="scale"/> cells per pixel, in [0, 1].</summary>
    public float Fractal(float x, float y, float scale, int octaves = 3)
    {
        float sum = 0, weight = 1, total = 0;
        for (int o = 0; o < octaves; o++)
        {
            sum += weight * At(x * scale + 17 * o, y * scale + 31 * o);
            total += weight;
            weight *= 0.5f;
            scale *= 2;
        }

        return sum / total;
    }
}
