using System.Globalization;
using System.Reflection;
using Microsoft.ML.ModelMerging.Algorithms;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// Reports a <c>MergeExperts</c> fit through ML.NET's own channel, so <c>MLContext.Log</c> shows it: each stage once, and
/// long stages (adaptation steps, data passes) at every tenth. ML.NET keeps a catalog's environment internal; it is read
/// by its interface property's name, and without it the fit stays silent (the <c>Progress</c> option still reports).
/// </summary>
internal sealed class MergeExpertsLog : IProgress<AlgorithmProgress>, IDisposable
{
    private readonly IChannel? _channel;
    private readonly IProgress<AlgorithmProgress>? _user;
    private string _stage = "";
    private long _tenth = -1;

    public MergeExpertsLog(TransformsCatalog catalog, IProgress<AlgorithmProgress>? user)
    {
        _user = user;
        _channel = (EnvironmentOf(catalog) as IChannelProvider)?.Start("MergeExperts");
    }

    public void Info(string message) => _channel?.Info(MessageSensitivity.None, message);

    public void Report(AlgorithmProgress value)
    {
        _user?.Report(value);
        long tenth = value.Total > 0 ? 10 * value.Done / value.Total : 0;
        if (value.Stage == _stage && tenth == _tenth)
        {
            return;
        }

        _stage = value.Stage;
        _tenth = tenth;
        string loss = value.Loss is double l ? string.Create(CultureInfo.InvariantCulture, $", loss {l:F4}") : "";
        Info(string.Create(CultureInfo.InvariantCulture, $"{value.Stage} {value.Done}/{value.Total}{loss}"));
    }

    public void Dispose() => _channel?.Dispose();

    private static object? EnvironmentOf(TransformsCatalog catalog) =>
        catalog.GetType().GetProperty("Microsoft.ML.Data.IInternalCatalog.Environment", BindingFlags.Instance | BindingFlags.NonPublic)?.GetValue(catalog);
}
