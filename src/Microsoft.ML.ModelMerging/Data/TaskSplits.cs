namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The fixed train / validation / test parts of one task. The validation part is carved from the training pool, so
/// choosing hyper-parameters on it never looks at the test part.
/// </summary>
public sealed class TaskSplits
{
    public TaskSplits(ImageDataset train, ImageDataset validation, ImageDataset test)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(validation);
        ArgumentNullException.ThrowIfNull(test);
        foreach (var part in new[] { validation, test })
        {
            if (!part.ClassNames.SequenceEqual(train.ClassNames, StringComparer.Ordinal) ||
                part.Channels != train.Channels || part.Height != train.Height || part.Width != train.Width)
            {
                throw new ArgumentException(
                    $"Split '{part.Name}' ({part}) does not match '{train.Name}' ({train}): all parts need the same classes and image shape.");
            }
        }

        Train = train;
        Validation = validation;
        Test = test;
    }

    public ImageDataset Train { get; }

    public ImageDataset Validation { get; }

    public ImageDataset Test { get; }

    public IReadOnlyList<string> ClassNames => Train.ClassNames;

    public SplitSizes Sizes => new(Train.Count, Validation.Count, Test.Count);

    public override string ToString() => $"{Train}; validation {Validation.Count}; test {Test.Count}";
}
