namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The fixed train / validation / test parts of one task. The validation part is carved from the training pool, so
/// choosing hyper-parameters on it never looks at the test part.
/// </summary>
public sealed class TaskSplits
{
    /// <summary>Groups the three parts of a task.</summary>
    /// <exception cref="ArgumentException">The parts differ in class names or image shape.</exception>
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

    /// <summary>The training part.</summary>
    public ImageDataset Train { get; }

    /// <summary>The validation part, for choosing hyperparameters.</summary>
    public ImageDataset Validation { get; }

    /// <summary>The test part, for reporting only.</summary>
    public ImageDataset Test { get; }

    /// <summary>Class names (the same in every part).</summary>
    public IReadOnlyList<string> ClassNames => Train.ClassNames;

    /// <summary>The number of images in each part.</summary>
    public SplitSizes Sizes => new(Train.Count, Validation.Count, Test.Count);

    /// <summary>The parts' sizes and shape, for logs.</summary>
    public override string ToString() => $"{Train}; validation {Validation.Count}; test {Test.Count}";
}
