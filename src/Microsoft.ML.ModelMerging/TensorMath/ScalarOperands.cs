using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.TensorMath;

/// <summary>
/// Tensor arithmetic whose <see cref="Scalar"/> operands stay alive until libtorch has returned. The library's code
/// does all scalar arithmetic on tensors through here; <c>Architecture/ScalarOperandTests</c> fails on any other form.
/// </summary>
/// <remarks>
/// TorchSharp turns a .NET number into a <see cref="Scalar"/> (a native object with a finaliser) and passes only its raw
/// handle to libtorch. Nothing keeps that temporary reachable during the call, so a collection started by any other
/// thread can finalise it while libtorch still reads it: libtorch then reads a freed scalar ("Unknown scalar type", a
/// failed internal assert in <c>Scalar::equal</c>, a double free, or, worse, a wrong value). The temporaries are not only
/// the implicit conversions at a call site: <c>a + b</c>, <c>a.add(b)</c> and <c>a.add(2.0)</c> make an <c>alpha = 1</c>
/// inside TorchSharp (<c>a - b</c> does not), <c>square()</c> is <c>pow(2)</c>, and <c>a * 0.5</c> converts inside the operator. Here the constant
/// one is a process-lifetime root and every other scalar is disposed only after the native call. The numbers are doubles:
/// these helpers are for floating-point tensors (an integer tensor times a double scalar would become floating point).
/// </remarks>
internal static class ScalarOperands
{
    /// <summary>alpha = 1 for add/sub; a static root, so never finalised.</summary>
    private static readonly Scalar One = 1.ToScalar();

    /// <summary><paramref name="op"/>(<paramref name="value"/> as a Scalar), the Scalar disposed only afterwards.</summary>
    public static Tensor With(double value, Func<Scalar, Tensor> op)
    {
        using var scalar = value.ToScalar();
        return op(scalar);
    }

    /// <summary><paramref name="op"/> with two scalars, both disposed only afterwards.</summary>
    public static Tensor With(double first, double second, Func<Scalar, Scalar, Tensor> op)
    {
        using var a = first.ToScalar();
        using var b = second.ToScalar();
        return op(a, b);
    }

    /// <summary>a + b.</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a += b, in place; returns a.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    /// <summary>a += value·b, in place; returns a.</summary>
    public static Tensor PlusScaledInPlace(this Tensor a, Tensor b, double value) => With(value, alpha => a.add_(b, alpha));

    /// <summary>a², element-wise, as a·a (bitwise what <c>pow(2)</c> computes).</summary>
    public static Tensor Squared(this Tensor a) => a.mul(a);

    /// <summary>a·value.</summary>
    public static Tensor Times(this Tensor a, double value) => With(value, s => a.mul(s));

    /// <summary>a ·= value, in place; returns a.</summary>
    public static Tensor TimesInPlace(this Tensor a, double value) => With(value, s => a.mul_(s));

    /// <summary>a / value.</summary>
    public static Tensor DividedBy(this Tensor a, double value) => With(value, s => a.div(s));

    /// <summary>a + value.</summary>
    public static Tensor PlusScalar(this Tensor a, double value) => With(value, s => a.add(s, One));

    /// <summary>a − value.</summary>
    public static Tensor MinusScalar(this Tensor a, double value) => With(value, s => a.sub(s));

    /// <summary>a += value, in place; returns a.</summary>
    public static Tensor PlusScalarInPlace(this Tensor a, double value) => With(value, s => a.add_(s, One));

    /// <summary>max(a, value), element-wise.</summary>
    public static Tensor AtLeast(this Tensor a, double value) => With(value, s => a.clamp_min(s));

    /// <summary>min(max(a, low), high), element-wise.</summary>
    public static Tensor Clamped(this Tensor a, double low, double high) => With(low, high, (l, h) => a.clamp(l, h));
}
