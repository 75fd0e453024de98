using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.MultiTask;
using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.Algorithms;

/// <summary>What an algorithm needs besides the experts; callers check these before any work starts.</summary>
[Flags]
public enum AlgorithmNeeds
{
    /// <summary>Nothing but the experts (simple average).</summary>
    None = 0,

    /// <summary>A pre-trained base shared by the experts (task vectors are taken against it).</summary>
    PretrainedBase = 1,

    /// <summary>Labeled training examples of every task (Fisher, RegMean).</summary>
    LabeledData = 2,

    /// <summary>Unlabeled images of every task, each row's task known (test-time adaptation).</summary>
    UnlabeledImages = 4,

    /// <summary>The task of each input at inference: the result has one model per task (TALL masks, consensus, EMR).</summary>
    TaskAtInference = 8,
}

/// <summary>
/// A merge algorithm: FusionBench's <c>method.Run(pool)</c>. Declares its parameters (type, range, default), the values a
/// comparison searches, and what it needs; <see cref="Run"/> turns an expert pool into a <see cref="MultiTaskModel"/>.
/// Every caller (<c>mlmerge merge --list</c>, <c>adapt</c>, <c>compare</c>, <c>MergeExperts</c>) finds algorithms through
/// <see cref="MergeAlgorithmRegistry"/> and never switches on their names.
/// </summary>
public interface IMergeAlgorithm
{
    /// <summary>The registry name, e.g. <c>ties</c> or <c>wemoe</c>.</summary>
    string Name { get; }

    /// <summary>One line: what the algorithm computes.</summary>
    string Summary { get; }

    /// <summary>What the algorithm needs besides the experts; callers check it before any work.</summary>
    AlgorithmNeeds Needs { get; }

    /// <summary>Declared parameters; <see cref="MergeParameters.Resolve(string, IReadOnlyList{MergeParameterSpec})"/> checks values against them.</summary>
    IReadOnlyList<MergeParameterSpec> Parameters { get; }

    /// <summary>The values <c>compare</c> tries per parameter (every combination); parameters not listed keep their defaults.</summary>
    IReadOnlyDictionary<string, IReadOnlyList<string>> SearchGrid { get; }

    /// <summary>
    /// Checks, before any work, that <see cref="Run"/> can run with <paramref name="parameters"/> on <paramref name="pool"/>:
    /// the parameters against their declarations, and the pool against <see cref="Needs"/>. An algorithm whose parameters
    /// depend on one another, or whose needs depend on them (TACT's base method), checks that too.
    /// </summary>
    /// <exception cref="ArgumentException">A parameter is unknown or out of range, or the pool lacks what the run needs.</exception>
    void Check(ExpertPool pool, MergeParameters parameters) => CheckDeclared(this, pool, parameters);

    /// <summary>
    /// The checks every algorithm shares: <paramref name="parameters"/> against <paramref name="algorithm"/>'s declarations,
    /// and a pre-trained base in <paramref name="pool"/> when it <see cref="Needs"/> one. An algorithm with checks of its own
    /// runs these first; returns the resolved parameters.
    /// </summary>
    /// <exception cref="ArgumentException">A parameter is unknown or out of range, or the pool has no base the algorithm needs.</exception>
    static ResolvedMergeParameters CheckDeclared(IMergeAlgorithm algorithm, ExpertPool pool, MergeParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(algorithm);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(parameters);
        var resolved = parameters.Resolve(algorithm.Name, algorithm.Parameters);
        if (algorithm.Needs.HasFlag(AlgorithmNeeds.PretrainedBase) && !pool.HasPretrained)
        {
            throw new ArgumentException($"{algorithm.Name} forms task vectors against a pre-trained base, and the pool at {pool.Directory} has none.");
        }

        return resolved;
    }

    /// <summary>Merges the pool's experts (all of them) into a model serving <see cref="AlgorithmContext.Tasks"/>.</summary>
    /// <exception cref="ArgumentException">A parameter is unknown or out of range, or the pool lacks what <see cref="Needs"/> says.</exception>
    MultiTaskModel Run(ExpertPool pool, MergeParameters parameters, AlgorithmContext context);
}
