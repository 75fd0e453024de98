using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.ML.ModelMerging.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Reads the merged tensors of a streaming merge, in order, one tensor ahead: while the caller merges tensor k, a second
/// thread reads tensor k+1 of the base and of every expert into reused buffers, checks every value is finite (on each
/// chunk right after reading it, while it is in cache) and turns the experts' weights into task vectors in place.
/// Memory: two slots of (1 + experts) × the largest tensor, allocated once and reused by every pass (fresh pages are
/// costly, and a freed block may not be given back to the system).
/// </summary>
internal sealed class TensorReadAhead : IDisposable
{
    /// <summary>Reads go through the cache in pieces of this size, checked as they arrive.</summary>
    private const int PieceBytes = 1 << 22;

    private readonly Checkpoint _base;
    private readonly IReadOnlyList<Checkpoint> _experts;
    private readonly IReadOnlyList<double>? _expertWeights;
    private readonly IReadOnlyList<string> _expertNames;
    private readonly Slot[] _slots = [new(), new()];
    private IReadOnlyList<string> _names = [];
    private Task? _pending;
    private int _next;

    public TensorReadAhead(Checkpoint baseCheckpoint, IReadOnlyList<Checkpoint> experts, IReadOnlyList<double>? expertWeights,
        IReadOnlyList<string> expertNames)
    {
        _base = baseCheckpoint;
        _experts = experts;
        _expertWeights = expertWeights;
        _expertNames = expertNames;
    }

    /// <summary>Starts a pass over <paramref name="names"/> (reading the first one at once); a pass still under way is abandoned.</summary>
    public void Start(IReadOnlyList<string> names)
    {
        WaitQuietly();
        _names = names;
        _next = 0;
        StartNext();
    }

    /// <summary>
    /// Waits for the next tensor (in the order of the names given) and starts reading the one after it. The returned
    /// input is valid until the next call; the caller disposes it.
    /// </summary>
    public MergeTensorInput Next()
    {
        if (_pending is null) throw new InvalidOperationException("Every tensor has been read.");
        var slot = _slots[(_next - 1) % 2];
        try
        {
            _pending.GetAwaiter().GetResult();
        }
        finally
        {
            _pending = null;
        }

        StartNext();
        var lacking = _experts.Any(e => !e.Contains(slot.Name)) ? _experts.Select(e => !e.Contains(slot.Name)).ToArray() : null;
        return MergeTensorInput.FromStackedTaskVectors(slot.Name, slot.Base!, slot.Stacked!, lacking);
    }

    private void StartNext()
    {
        if (_next >= _names.Count) return;
        var slot = _slots[_next % 2];
        string name = _names[_next++];
        slot.Prepare(name, _base.GetEntry(name).Shape, _experts.Count);
        _pending = Task.Run(() => Fill(slot));
    }

    /// <summary>On the reading thread: base, then each expert (the base again where an expert lacks the tensor), then τ in place.</summary>
    private void Fill(Slot slot)
    {
        ReadChecked(_base, slot.Name, slot.Base!, "the base model", null);
        for (int i = 0; i < _experts.Count; i++)
        {
            var row = slot.Rows![i];
            if (_experts[i].Contains(slot.Name)) ReadChecked(_experts[i], slot.Name, row, MergeInputException.DescribeExpert(i, _expertNames), i);
            else row.copy_(slot.Base!);
        }

        MergeTensorInput.ToTaskVectorsInPlace(slot.Base!, slot.Stacked!, _expertWeights);
    }

    /// <summary>Reads one stored tensor into <paramref name="destination"/> (float32, its shape) and checks it is finite.</summary>
    private static void ReadChecked(Checkpoint checkpoint, string name, Tensor destination, string who, int? expertIndex)
    {
        var entry = checkpoint.GetEntry(name);
        if (entry.DType != SafeTensorsDType.F32)
        {
            // Half precision or float64 on disk: converted to float32 like every driver does, then checked.
            using var converted = checkpoint.ReadTensor(name);
            destination.copy_(converted);
            MergeTensorInput.EnsureFloatingAndFinite(name, destination, who, expertIndex);
            return;
        }

        long offset = 0;
        bool finite = true;
        TensorBytes.Visit(destination, span =>
        {
            for (int start = 0; start < span.Length; start += PieceBytes)
            {
                var piece = span.Slice(start, Math.Min(PieceBytes, span.Length - start));
                checkpoint.ReadBytes(name, offset, piece);
                offset += piece.Length;
                finite &= AllFinite(MemoryMarshal.Cast<byte, float>(piece));
            }
        });
        if (!finite) MergeTensorInput.EnsureFloatingAndFinite(name, destination, who, expertIndex); // throws, with the count
    }

    /// <summary>True when no value is NaN or ±∞ (exponent bits all ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static bool AllFinite(ReadOnlySpan<float> values)
    {
        const uint exponent = 0x7F80_0000;
        var bits = MemoryMarshal.Cast<float, uint>(values);
        int i = 0;
        if (Vector.IsHardwareAccelerated && bits.Length >= Vector<uint>.Count)
        {
            var mask = new Vector<uint>(exponent);
            var seen = Vector<uint>.Zero;
            var vectors = MemoryMarshal.Cast<uint, Vector<uint>>(bits);
            foreach (var v in vectors)
            {
                seen |= Vector.Equals(v & mask, mask);
            }

            if (seen != Vector<uint>.Zero) return false;
            i = vectors.Length * Vector<uint>.Count;
        }

        for (; i < bits.Length; i++)
        {
            if ((bits[i] & exponent) == exponent) return false;
        }

        return true;
    }

    public void Dispose()
    {
        WaitQuietly(); // never free buffers a read is still filling
        foreach (var slot in _slots) slot.Dispose();
    }

    private void WaitQuietly()
    {
        try
        {
            _pending?.Wait();
        }
        catch (AggregateException)
        {
            // The error was reported by Next, or the pass was abandoned.
        }

        _pending = null;
    }

    /// <summary>Reused buffers for one tensor: θ0 and the experts stacked, with views of the current tensor's shape.</summary>
    private sealed class Slot : IDisposable
    {
        private Tensor? _baseBuffer;
        private Tensor? _expertsBuffer;
        private long _capacity;

        public string Name { get; private set; } = "";
        public Tensor? Base { get; private set; }
        public Tensor? Stacked { get; private set; }
        public Tensor[]? Rows { get; private set; }

        /// <summary>On the calling thread (tensor handles are made there): views of <paramref name="shape"/> over the buffers, grown when needed.</summary>
        public void Prepare(string name, long[] shape, int experts)
        {
            DisposeViews();
            long count = TensorEntry.ShapeElementCount(shape);
            if (count > _capacity || _baseBuffer is null || _expertsBuffer is null)
            {
                _baseBuffer?.Dispose();
                _expertsBuffer?.Dispose();
                _capacity = Math.Max(count, 1);
                _baseBuffer = empty(_capacity, dtype: ScalarType.Float32).DetachFromDisposeScope();
                _expertsBuffer = empty(experts * _capacity, dtype: ScalarType.Float32).DetachFromDisposeScope();
            }

            Name = name;
            using (var flat = _baseBuffer!.narrow(0, 0, count))
            {
                Base = flat.view(shape).DetachFromDisposeScope();
            }

            using (var flat = _expertsBuffer!.narrow(0, 0, experts * count))
            {
                Stacked = flat.view([experts, .. shape]).DetachFromDisposeScope();
            }

            Rows = [.. Enumerable.Range(0, experts).Select(i => Stacked.select(0, i).DetachFromDisposeScope())];
        }

        private void DisposeViews()
        {
            Base?.Dispose();
            Stacked?.Dispose();
            foreach (var row in Rows ?? []) row.Dispose();
            Base = null;
            Stacked = null;
            Rows = null;
        }

        public void Dispose()
        {
            DisposeViews();
            _baseBuffer?.Dispose();
            _expertsBuffer?.Dispose();
        }
    }
}
