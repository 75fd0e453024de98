using Microsoft.ML.ModelMerging.TensorMath;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Training;

/// <summary>
/// One Adam(W) update of one parameter, in PyTorch's order and with PyTorch's arithmetic: p ← p·(1 − lr·wd) (decoupled
/// weight decay, AdamW), m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε). Every scalar
/// operand stays alive through its native call (see <see cref="ScalarOperands"/>), which TorchSharp's own optimizers do not
/// guarantee. Call it under <c>no_grad</c>.
/// </summary>
internal static class AdamUpdate
{
    public static void Apply(Tensor parameter, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step,
        double learningRate, double beta1, double beta2, double epsilon, double weightDecay = 0)
    {
        using var scope = NewDisposeScope();
        if (weightDecay != 0) parameter.TimesInPlace(1 - learningRate * weightDecay);
        double correction1 = 1 - Math.Pow(beta1, step);
        double correction2 = 1 - Math.Pow(beta2, step);
        expAvg.TimesInPlace(beta1).PlusScaledInPlace(grad, 1 - beta1);
        ScalarOperands.With(1 - beta2, value => expAvgSq.TimesInPlace(beta2).addcmul_(grad, grad, value));
        Tensor denominator = expAvgSq.sqrt().DividedBy(Math.Sqrt(correction2)).PlusScalarInPlace(epsilon);
        ScalarOperands.With(-learningRate / correction1, value => parameter.addcdiv_(expAvg, denominator, value));
    }
}
