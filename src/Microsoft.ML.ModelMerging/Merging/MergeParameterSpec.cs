using System.Globalization;

namespace Microsoft.ML.ModelMerging.Merging;

/// <summary>A declared parameter of a merge method: name, kind, default, valid range and a one-line description.</summary>
public sealed class MergeParameterSpec
{
    private MergeParameterSpec(string name, MergeParameterKind kind, string defaultValue, string description)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException("A parameter needs a name.", nameof(name));
        }

        Name = name;
        Kind = kind;
        DefaultValue = defaultValue;
        Description = description;
    }

    /// <summary>The parameter's name as typed after <c>--param</c>, e.g. <c>lambda</c>.</summary>
    public string Name { get; }

    /// <summary>Number, integer, number per expert, or choice.</summary>
    public MergeParameterKind Kind { get; }

    /// <summary>The default, as the text a user would type.</summary>
    public string DefaultValue { get; }

    /// <summary>One line saying what the parameter does.</summary>
    public string Description { get; }

    /// <summary>Lowest accepted value of a numeric parameter (−∞ when unbounded).</summary>
    public double Minimum { get; private init; } = double.NegativeInfinity;

    /// <summary>Highest accepted value of a numeric parameter (+∞ when unbounded).</summary>
    public double Maximum { get; private init; } = double.PositiveInfinity;

    /// <summary>Whether <see cref="Minimum"/> itself is accepted.</summary>
    public bool MinimumInclusive { get; private init; } = true;

    /// <summary>Whether <see cref="Maximum"/> itself is accepted.</summary>
    public bool MaximumInclusive { get; private init; } = true;

    /// <summary>The accepted words of a <see cref="MergeParameterKind.Choice"/> parameter; empty otherwise.</summary>
    public IReadOnlyList<string> Choices { get; private init; } = [];

    /// <summary>What values are accepted, e.g. <c>number in (0, 1]</c> or <c>one of: global, per-tensor</c>.</summary>
    public string AcceptedValues => Kind switch
    {
        MergeParameterKind.Choice => "one of: " + string.Join(", ", Choices),
        MergeParameterKind.Integer => "integer" + RangeText(),
        MergeParameterKind.NumberPerExpert => "number" + RangeText() + ", or one per expert separated by commas",
        _ => "number" + RangeText(),
    };

    /// <summary>Declares a real-valued parameter with an optional range.</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="defaultValue">Its default.</param>
    /// <param name="description">One line saying what it does.</param>
    /// <param name="minimum">Lowest accepted value.</param>
    /// <param name="maximum">Highest accepted value.</param>
    /// <param name="minimumInclusive">Whether the minimum itself is accepted.</param>
    /// <param name="maximumInclusive">Whether the maximum itself is accepted.</param>
    public static MergeParameterSpec Number(
        string name,
        double defaultValue,
        string description,
        double minimum = double.NegativeInfinity,
        double maximum = double.PositiveInfinity,
        bool minimumInclusive = true,
        bool maximumInclusive = true) =>
        new(name, MergeParameterKind.Number, FormatNumber(defaultValue), description)
        {
            Minimum = minimum,
            Maximum = maximum,
            MinimumInclusive = minimumInclusive,
            MaximumInclusive = maximumInclusive,
        };

    /// <summary>Declares a real-valued parameter given once for every expert or once per expert (comma-separated).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="defaultValue">Its default, for every expert.</param>
    /// <param name="description">One line saying what it does.</param>
    /// <param name="minimum">Lowest accepted value.</param>
    /// <param name="maximum">Highest accepted value.</param>
    /// <param name="minimumInclusive">Whether the minimum itself is accepted.</param>
    /// <param name="maximumInclusive">Whether the maximum itself is accepted.</param>
    public static MergeParameterSpec NumberPerExpert(
        string name,
        double defaultValue,
        string description,
        double minimum = double.NegativeInfinity,
        double maximum = double.PositiveInfinity,
        bool minimumInclusive = true,
        bool maximumInclusive = true) =>
        new(name, MergeParameterKind.NumberPerExpert, FormatNumber(defaultValue), description)
        {
            Minimum = minimum,
            Maximum = maximum,
            MinimumInclusive = minimumInclusive,
            MaximumInclusive = maximumInclusive,
        };

    /// <summary>Declares an integer parameter with an optional range (inclusive).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="defaultValue">Its default.</param>
    /// <param name="description">One line saying what it does.</param>
    /// <param name="minimum">Lowest accepted value.</param>
    /// <param name="maximum">Highest accepted value.</param>
    public static MergeParameterSpec Integer(
        string name,
        long defaultValue,
        string description,
        long minimum = long.MinValue,
        long maximum = long.MaxValue) =>
        new(name, MergeParameterKind.Integer, defaultValue.ToString(CultureInfo.InvariantCulture), description)
        {
            Minimum = minimum,
            Maximum = maximum,
        };

    /// <summary>Declares a parameter taking one of a fixed set of words (compared exactly).</summary>
    /// <param name="name">The parameter's name.</param>
    /// <param name="defaultValue">Its default; one of <paramref name="choices"/>.</param>
    /// <param name="description">One line saying what it does.</param>
    /// <param name="choices">The accepted words.</param>
    /// <exception cref="ArgumentException">The default is not one of the choices.</exception>
    public static MergeParameterSpec Choice(string name, string defaultValue, string description, params string[] choices)
    {
        if (!choices.Contains(defaultValue, StringComparer.Ordinal))
        {
            throw new ArgumentException($"Default '{defaultValue}' of parameter '{name}' is not one of its choices.", nameof(defaultValue));
        }

        return new(name, MergeParameterKind.Choice, defaultValue, description) { Choices = choices };
    }

    /// <summary>The same parameter with another description (a method reusing another's parameters).</summary>
    public MergeParameterSpec WithDescription(string description) =>
        new(Name, Kind, DefaultValue, description)
        {
            Minimum = Minimum,
            Maximum = Maximum,
            MinimumInclusive = MinimumInclusive,
            MaximumInclusive = MaximumInclusive,
            Choices = Choices,
        };

    /// <summary>A line for <c>--list</c>: <c>keep = 0.2  fraction of ... (number in (0, 1])</c>.</summary>
    public override string ToString() => $"{Name} = {DefaultValue}  {Description} ({AcceptedValues})";

    /// <summary>Reads and checks <paramref name="text"/>: a double, a long, a choice string or a double[].</summary>
    internal object Parse(string methodName, string text)
    {
        string value = text.Trim();
        return Kind switch
        {
            MergeParameterKind.Number => ParseNumber(methodName, value, value),
            MergeParameterKind.Integer => ParseInteger(methodName, value),
            MergeParameterKind.Choice => ParseChoice(methodName, value),
            _ => value.Split(',').Select(part => ParseNumber(methodName, part.Trim(), value)).ToArray(),
        };
    }

    internal static string FormatNumber(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private double ParseNumber(string methodName, string value, string wholeText)
    {
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number) || !double.IsFinite(number))
        {
            throw Invalid(methodName, wholeText);
        }

        bool aboveMinimum = MinimumInclusive ? number >= Minimum : number > Minimum;
        bool belowMaximum = MaximumInclusive ? number <= Maximum : number < Maximum;
        return aboveMinimum && belowMaximum ? number : throw Invalid(methodName, wholeText);
    }

    private long ParseInteger(string methodName, string value) =>
        long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long number) && number >= Minimum && number <= Maximum
            ? number
            : throw Invalid(methodName, value);

    private string ParseChoice(string methodName, string value) =>
        Choices.FirstOrDefault(choice => string.Equals(choice, value, StringComparison.OrdinalIgnoreCase))
            ?? throw Invalid(methodName, value);

    // ParamName is the parameter's own name, so a caller can tell which setting was refused without parsing the message.
    private ArgumentException Invalid(string methodName, string text) =>
        new($"Parameter '{Name}' of merge method '{methodName}' must be {Article()}{AcceptedValues}; got '{text}'.", Name);

    private string Article() => Kind switch
    {
        MergeParameterKind.Choice => "",
        MergeParameterKind.Integer => "an ",
        _ => "a ",
    };

    private string RangeText()
    {
        // The type's own limits are no range a user should read: [2, 2147483647] is "≥ 2".
        bool hasMinimum = !double.IsNegativeInfinity(Minimum) && Minimum is not (long.MinValue or int.MinValue or double.MinValue);
        bool hasMaximum = !double.IsPositiveInfinity(Maximum) && Maximum is not (long.MaxValue or int.MaxValue or double.MaxValue);
        if (!hasMinimum && !hasMaximum)
        {
            return string.Empty;
        }

        if (!hasMaximum)
        {
            return (MinimumInclusive ? " >= " : " > ") + FormatNumber(Minimum);
        }

        if (!hasMinimum)
        {
            return (MaximumInclusive ? " <= " : " < ") + FormatNumber(Maximum);
        }

        return " in " + (MinimumInclusive ? "[" : "(") + FormatNumber(Minimum) + ", " + FormatNumber(Maximum) + (MaximumInclusive ? "]" : ")");
    }
}
