using Microsoft.ML.ModelMerging.Pools;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>ML.NET catalog entry: <c>mlContext.Transforms.MergeExperts(experts, options)</c>.</summary>
public static class MergeExpertsCatalog
{
    /// <summary>
    /// An estimator that merges <paramref name="experts"/> when fitted and scores images with the merged model through
    /// ML.NET's own <c>OnnxTransformer</c>, so the fitted pipeline saves with <c>mlContext.Model.Save(model, null, path)</c>
    /// and loads anywhere ML.NET and its ONNX transformer run.
    /// </summary>
    /// <param name="catalog">The transforms catalog of the <see cref="MLContext"/> the pipeline belongs to.</param>
    /// <param name="experts">The pre-trained model, the experts and their heads. Must stay alive until <c>Fit</c> returns.</param>
    /// <param name="options">Method, input column, tasks and model file; defaults: task arithmetic (λ = 0.3) on column <c>pixels</c> of 0..255 values, every task.</param>
    /// <example>
    /// <code>
    /// var pipeline = ml.Transforms.ResizeImages("image", 28, 28, "image")
    ///     .Append(ml.Transforms.ConvertToGrayscale("image"))
    ///     .Append(ml.Transforms.ExtractPixels("pixels", "image"))
    ///     .Append(ml.Transforms.MergeExperts(experts, new MergeExpertsOptions { Method = "ties" }));
    /// </code>
    /// </example>
    public static MergeExpertsEstimator MergeExperts(this TransformsCatalog catalog, ExpertPool experts, MergeExpertsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(experts);
        return new MergeExpertsEstimator(catalog, experts, options ?? new MergeExpertsOptions());
    }

    /// <summary>
    /// The estimator that builds the model of a comparison's entry, e.g. <c>leaderboard.Best</c> of a
    /// <see cref="Experiments.MergeExperiment"/>: the same method with the setting chosen on validation.
    /// </summary>
    /// <param name="catalog">The transforms catalog of the <see cref="MLContext"/> the pipeline belongs to.</param>
    /// <param name="experts">The expert set the comparison ran on.</param>
    /// <param name="setting">The entry's <see cref="Experiments.LeaderboardEntry.Setting"/> (or <see cref="Experiments.Leaderboard.ReadBestSetting"/>).</param>
    /// <param name="options">Input column, tasks, model path...; its method, parameters and algorithm are ignored (not changed): the setting's are used.</param>
    public static MergeExpertsEstimator MergeExperts(this TransformsCatalog catalog, ExpertPool experts, Algorithms.MergeCandidate setting,
        MergeExpertsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(setting);
        return catalog.MergeExperts(experts, (options ?? new MergeExpertsOptions()).WithSetting(setting));
    }
}
