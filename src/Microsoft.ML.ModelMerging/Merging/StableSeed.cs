using System.Text;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Derives a random generator seed from (user seed, expert index, tensor name) with a hash that is the same on every
/// run, machine and .NET version (unlike string.GetHashCode), so random masks do not depend on the order tensors are
/// processed in or on the process.
/// </summary>
internal static class StableSeed
{
    private const ulong FnvOffsetBasis = 14695981039346656037UL;
    private const ulong FnvPrime = 1099511628211UL;

    public static ulong Derive(long seed, int expertIndex, string tensorName)
    {
        ulong hash = FnvOffsetBasis;
        hash = Append(hash, unchecked((ulong)seed));
        hash = Append(hash, unchecked((ulong)expertIndex));
        foreach (byte b in Encoding.UTF8.GetBytes(tensorName))
        {
            hash = unchecked((hash ^ b) * FnvPrime);
        }

        return Finalize(hash);
    }

    /// <summary>FNV-1a over the 8 little-endian bytes of <paramref name="value"/>.</summary>
    private static ulong Append(ulong hash, ulong value)
    {
        for (int shift = 0; shift < 64; shift += 8)
        {
            hash = unchecked((hash ^ ((value >> shift) & 0xFF)) * FnvPrime);
        }

        return hash;
    }

    /// <summary>SplitMix64's finaliser: spreads FNV's weak low-order mixing over all 64 bits.</summary>
    private static ulong Finalize(ulong hash)
    {
        unchecked
        {
            hash ^= hash >> 30;
            hash *= 0xBF58476D1CE4E5B9UL;
            hash ^= hash >> 27;
            hash *= 0x94D049BB133111EBUL;
            hash ^= hash >> 31;
            return hash;
        }
    }
}
