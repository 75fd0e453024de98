using Microsoft.ML.ModelMerging.Merging;
using Microsoft.ML.ModelMerging.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>Checks and conversions shared by the methods that build a model from θ0 and experts.</summary>
internal static class ExpertModels
{
    /// <summary>Experts must hold every architecture tensor with θ0's shape; their other tensors (heads) do not matter.</summary>
    public static void CheckExperts(IReadOnlyDictionary<string, Tensor> baseModel, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> experts)
    {
        if (experts.Any(e => e is null))
        {
            throw new ArgumentException("An expert is null.", nameof(experts));
        }

        var subsets = experts.Select(e => (IReadOnlyDictionary<string, Tensor>)baseModel.Keys.Where(e.ContainsKey)
            .ToDictionary(name => name, name => e[name], StringComparer.Ordinal)).ToList();
        MergePlan.Create(baseModel, subsets, new TensorFilter(includeDefaultPatterns: false));
    }

    /// <summary>The tensors of the architecture, checked against the config's shapes.</summary>
    public static Dictionary<string, Tensor> ArchitectureTensors(VisionTransformerConfig config, IReadOnlyDictionary<string, Tensor> model) =>
        new ConfigWeights(config, model, "the pre-trained model", (message, name) => new MergeInputException(message, name)).All();

    public static Tensor Float32(Tensor tensor, Device device) => tensor.detach().to(ScalarType.Float32).to(device);
}
