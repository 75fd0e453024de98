namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// A small seeded generator (SplitMix64) owned by this library, so that data sets, splits and renderings are the
/// same bytes on every machine and every .NET version; <see cref="System.Random"/> does not promise that.
/// </summary>
internal sealed class SeededRandom
{
    private ulong state;

    /// <param name="seed">The user's seed.</param>
    /// <param name="stream">Separates independent uses of one seed (rendering vs. splitting, ...).</param>
    public SeededRandom(int seed, ulong stream = 0)
    {
        state = unchecked((ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (stream + 1) * 0xD1B54A32D192ED03UL);
        NextUInt64(); // decorrelate nearby seeds before the first use
    }

    public ulong NextUInt64()
    {
        unchecked
        {
            ulong z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    /// <summary>Uniform integer in [0, maxExclusive), without modulo bias.</summary>
    public int NextInt(int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        ulong bound = (ulong)maxExclusive;
        ulong threshold = (0UL - bound) % bound;
        while (true)
        {
            ulong x = NextUInt64();
            if (x >= threshold)
            {
                return (int)(x % bound);
            }
        }
    }

    /// <summary>Uniform double in [0, 1) from the top 53 bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform float in [min, max).</summary>
    public float NextFloat(float min, float max) => (float)(min + (max - min) * NextDouble());

    /// <summary>Fisher–Yates shuffle in place.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
