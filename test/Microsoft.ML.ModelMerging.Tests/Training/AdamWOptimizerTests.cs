using Microsoft.ML.ModelMerging.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Tests.Training;

/// <summary>
/// The trainer's AdamW, written out so that its scalar operands stay alive through libtorch's calls, takes exactly the
/// steps of TorchSharp's <c>optim.AdamW</c> (PyTorch's algorithm): same parameters bit for bit after steps with two groups
/// at different learning rates, weight decay, and a learning rate changed between steps.
/// </summary>
[TestClass]
public sealed class AdamWOptimizerTests
{
    [TestMethod]
    public void StepsAreTorchSharpsAdamWBitForBit()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(3);
        var initialA = randn(new long[] { 5, 4 }, generator: generator);
        var initialB = randn(new long[] { 4 }, generator: generator);
        var inputs = randn(new long[] { 6, 4 }, generator: generator);

        (Parameter A, Parameter B) Fresh() => (new Parameter(initialA.clone()), new Parameter(initialB.clone()));
        Tensor Loss(Parameter a, Parameter b) => inputs.matmul(a.t()).matmul(a).add(b, 1).tanh().pow(2).sum();

        var (ourA, ourB) = Fresh();
        var (theirA, theirB) = Fresh();
        using var ours = new AdamWOptimizer([([ourA], 1e-2), ([ourB], 3e-3)], weightDecay: 0.05);
        using var theirs = optim.AdamW([new AdamW.ParamGroup([theirA], 1e-2, weight_decay: 0.05), new AdamW.ParamGroup([theirB], 3e-3, weight_decay: 0.05)], 1e-2, weight_decay: 0.05);
        for (int step = 0; step < 7; step++)
        {
            if (step == 4)
            {
                ours.Groups[0].LearningRate = 5e-3;
                theirs.ParamGroups.First().LearningRate = 5e-3;
            }

            ours.ZeroGrad();
            Loss(ourA, ourB).backward();
            ours.Step();
            theirs.zero_grad();
            Loss(theirA, theirB).backward();
            theirs.step();

            CollectionAssert.AreEqual(theirA.data<float>().ToArray(), ourA.data<float>().ToArray(), $"A after step {step + 1}");
            CollectionAssert.AreEqual(theirB.data<float>().ToArray(), ourB.data<float>().ToArray(), $"B after step {step + 1}");
        }

        Assert.AreNotEqual(initialA.data<float>()[0], ourA.data<float>()[0], "the parameters moved");
    }
}
