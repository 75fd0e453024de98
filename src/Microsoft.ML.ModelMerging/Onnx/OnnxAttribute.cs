using System.Globalization;
using Google.Protobuf;
using Microsoft.ML.ModelMerging.Onnx.Proto;

namespace Microsoft.ML.ModelMerging.Onnx;

/// <summary>A named node attribute (<c>axis</c>, <c>perm</c>, <c>epsilon</c>, ...) of one of the scalar or list kinds ONNX defines.</summary>
internal sealed class OnnxAttribute
{
    private readonly AttributeProto _proto;

    private OnnxAttribute(AttributeProto proto) => _proto = proto;

    public string Name => _proto.Name;

    public static OnnxAttribute Int(string name, long value) =>
        new(new AttributeProto { Name = CheckName(name), Type = AttributeProto.Types.AttributeType.Int, I = value });

    public static OnnxAttribute Float(string name, float value) =>
        new(new AttributeProto { Name = CheckName(name), Type = AttributeProto.Types.AttributeType.Float, F = value });

    public static OnnxAttribute String(string name, string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new(new AttributeProto { Name = CheckName(name), Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) });
    }

    public static OnnxAttribute Ints(string name, params long[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var proto = new AttributeProto { Name = CheckName(name), Type = AttributeProto.Types.AttributeType.Ints };
        proto.Ints.AddRange(values);
        return new(proto);
    }

    public static OnnxAttribute Floats(string name, params float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var proto = new AttributeProto { Name = CheckName(name), Type = AttributeProto.Types.AttributeType.Floats };
        proto.Floats.AddRange(values);
        return new(proto);
    }

    internal AttributeProto ToProto() => _proto.Clone();

    public override string ToString() => _proto.Type switch
    {
        AttributeProto.Types.AttributeType.Int => $"{Name}={_proto.I.ToString(CultureInfo.InvariantCulture)}",
        AttributeProto.Types.AttributeType.Float => $"{Name}={_proto.F.ToString(CultureInfo.InvariantCulture)}",
        AttributeProto.Types.AttributeType.String => $"{Name}=\"{_proto.S.ToStringUtf8()}\"",
        AttributeProto.Types.AttributeType.Ints => $"{Name}=[{string.Join(", ", _proto.Ints)}]",
        AttributeProto.Types.AttributeType.Floats => $"{Name}=[{string.Join(", ", _proto.Floats.Select(f => f.ToString(CultureInfo.InvariantCulture)))}]",
        _ => Name,
    };

    private static string CheckName(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return name;
    }
}
