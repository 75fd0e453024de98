using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>
/// Tensor ops with a scalar operand whose <see cref="Scalar"/> is kept alive until the native call has returned.
/// </summary>
/// <remarks>
/// TorchSharp turns a .NET number into a <see cref="Scalar"/> (a native object with a finaliser) implicitly, and passes
/// its raw handle to libtorch. Nothing keeps the temporary reachable during the call, so a garbage collection started by
/// any other thread can finalise it while libtorch still reads it: libtorch then sees a freed scalar ("Unknown scalar
/// type", a failed check in <c>toDouble</c>, or a double free that aborts the process). Every scalar operand in merge code
/// goes through here.
/// </remarks>
internal static class OwnedScalar
{
    /// <summary><paramref name="op"/>(<paramref name="value"/> as a Scalar), the Scalar disposed only afterwards.</summary>
    public static Tensor With(double value, Func<Scalar, Tensor> op)
    {
        using var scalar = value.ToScalar();
        return op(scalar);
    }
}
