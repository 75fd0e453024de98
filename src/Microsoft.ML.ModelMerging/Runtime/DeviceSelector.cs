using TorchSharp;

namespace Microsoft.ML.ModelMerging.Runtime;

/// <summary>Which device tensors live on: chosen at run time so one build serves CPU-only and CUDA machines.</summary>
public enum DevicePreference
{
    /// <summary>CUDA when TorchSharp reports it available, otherwise CPU.</summary>
    Auto,
    /// <summary>The CPU, always available.</summary>
    Cpu,
    /// <summary>The first CUDA device; an error when none exists.</summary>
    Cuda,
}

/// <summary>Parses and resolves <see cref="DevicePreference"/>.</summary>
public static class DeviceSelector
{
    /// <summary>Parses the command-line spelling <c>auto|cpu|cuda</c>.</summary>
    public static DevicePreference Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "auto" => DevicePreference.Auto,
        "cpu" => DevicePreference.Cpu,
        "cuda" or "gpu" => DevicePreference.Cuda,
        _ => throw new ArgumentException($"Unknown device '{text}': expected auto, cpu or cuda."),
    };

    /// <summary>Resolves a preference to a TorchSharp device; asking for CUDA on a machine without it is an error, not a silent fallback.</summary>
    public static torch.Device Resolve(DevicePreference preference)
    {
        bool cuda = torch.cuda.is_available();
        return preference switch
        {
            DevicePreference.Cpu => torch.CPU,
            DevicePreference.Cuda when cuda => torch.CUDA,
            DevicePreference.Cuda => throw new InvalidOperationException(
                "CUDA was requested but TorchSharp reports no CUDA device. The default build uses the CPU packages; " +
                "build with -p:ModelMergingGpu=true on a machine where TorchSharp-cuda-linux is obtainable."),
            _ => cuda ? torch.CUDA : torch.CPU,
        };
    }
}
