using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn.functional;
using Microsoft.ML.ModelMerging.TensorMath;

namespace Microsoft.ML.ModelMerging.Adaptation;

/// <summary>
/// The router of one WEMoE block (or of all blocks when shared): maps the MLP input tokens [B,T,W] to routing weights
/// [B,E], the mean over tokens of the router applied to every token, with no softmax.
/// </summary>
/// <remarks>
/// The last layer is affine, so the mean over tokens of its output equals the last layer applied to the mean of its
/// input; the router averages before the last layer, which is the same function with T times fewer multiplications.
/// </remarks>
internal sealed class WeightEnsemblingRouter : IDisposable
{
    private readonly List<KeyValuePair<string, Parameter>> _parameters;

    private WeightEnsemblingRouter(int depth, bool softmax, List<KeyValuePair<string, Parameter>> parameters)
    {
        Depth = depth;
        Softmax = softmax;
        _parameters = parameters;
    }

    public int Depth { get; }

    /// <summary>Whether the routing weights are a softmax over the experts (<see cref="WeightEnsemblingOptions.SoftmaxRouting"/>).</summary>
    public bool Softmax { get; }

    /// <summary>Full names (prefix included) and parameters, in forward order.</summary>
    public IReadOnlyList<KeyValuePair<string, Parameter>> Parameters => _parameters;

    /// <summary>
    /// A router whose parameters are named <paramref name="prefix"/> + <c>weight</c> (depth 0), <c>fc.weight</c>/<c>fc.bias</c>
    /// (depth 1) or <c>fc1.*</c>/<c>fc2.*</c> (depth 2). Weight matrices ~ N(0, std²) from <paramref name="generator"/>,
    /// hidden biases 0, the output bias (or the depth-0 vector) λ.
    /// </summary>
    public static WeightEnsemblingRouter Create(string prefix, int width, int experts, WeightEnsemblingOptions options, Generator generator, Device device)
    {
        using var scope = NewDisposeScope();
        var values = new List<KeyValuePair<string, Tensor>>();
        Tensor Normal(long rows, long columns) => randn([rows, columns], generator: generator).Times(options.RouterInitStd);
        // Raw routing starts at λ for every expert (task arithmetic); softmax routing at equal logits (the mean).
        Tensor LastBias() => ScalarOperands.With(options.SoftmaxRouting ? 0 : options.Lambda, value => full([experts], value, dtype: ScalarType.Float32));
        switch (options.RouterDepth)
        {
            case 0:
                values.Add(new(prefix + "weight", LastBias()));
                break;
            case 1:
                values.Add(new(prefix + "fc.weight", Normal(experts, width)));
                values.Add(new(prefix + "fc.bias", LastBias()));
                break;
            case 2:
                values.Add(new(prefix + "fc1.weight", Normal(width, width)));
                values.Add(new(prefix + "fc1.bias", zeros(width)));
                values.Add(new(prefix + "fc2.weight", Normal(experts, width)));
                values.Add(new(prefix + "fc2.bias", LastBias()));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(options), options.RouterDepth, "RouterDepth must be 0, 1 or 2.");
        }

        var parameters = values.Select(kv =>
        {
            var parameter = new Parameter(kv.Value.to(device).detach(), requires_grad: true);
            parameter.DetachFromDisposeScope();
            return KeyValuePair.Create(kv.Key, parameter);
        }).ToList();
        return new WeightEnsemblingRouter(options.RouterDepth, options.SoftmaxRouting, parameters);
    }

    /// <summary>Routing weights [B,E] of tokens [B,T,W]; a depth-0 router ignores its input and returns [1,E].</summary>
    public Tensor Forward(Tensor tokens)
    {
        Tensor P(int index) => _parameters[index].Value;
        Tensor routing = Depth switch
        {
            0 => P(0).unsqueeze(0),
            1 => linear(tokens.mean([1]), P(0), P(1)),
            _ => linear(relu(linear(tokens, P(0), P(1))).mean([1]), P(2), P(3)),
        };
        return Softmax ? softmax(routing, 1) : routing;
    }

    public void Dispose()
    {
        foreach (var (_, parameter) in _parameters)
        {
            parameter.Dispose();
        }
    }
}
