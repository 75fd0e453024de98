using Microsoft.ML.ModelMerging.Adaptation;

namespace Microsoft.ML.ModelMerging.Tests.Adaptation;

[TestClass]
public sealed class AdaptationLossLogTests
{
    /// <summary>A resumed run keeps the rows through its checkpoint; a row cut short by a kill ends them instead of failing.</summary>
    [TestMethod]
    public void ResumingKeepsCompleteRowsThroughTheCheckpointAndStopsAtACutRow()
    {
        using var dir = new TempDirectory();
        string path = dir.File("losses.csv");
        const string header = "step,seconds,learning_rate,loss,entropy:a";
        File.WriteAllLines(path, [header, "1,0.500,0.001,2.5,2.5", "2,1.000,0.001,2.25,2.25", "3,1.500,0.001,2,2", "4,2.0,0.001,1e-"]);
        using (var log = new AdaptationLossLog(path, ["a"], keepThroughStep: 10))
        {
            Assert.AreEqual(1.5, log.PreviousSeconds);
            Assert.AreEqual(2.0, log.LastLoss);
            log.Append(new AdaptationProgress(4, 10, 1.75, [1.75], 0.001, CheckpointWritten: true), 2.25);
        }

        CollectionAssert.AreEqual(new[] { header, "1,0.500,0.001,2.5,2.5", "2,1.000,0.001,2.25,2.25", "3,1.500,0.001,2,2", "4,2.250,0.001,1.75,1.75" },
            File.ReadAllLines(path));

        using (var log = new AdaptationLossLog(path, ["a"], keepThroughStep: 2))
        {
            Assert.AreEqual(1.0, log.PreviousSeconds, "rows after the checkpoint are redone");
        }

        CollectionAssert.AreEqual(new[] { header, "1,0.500,0.001,2.5,2.5", "2,1.000,0.001,2.25,2.25" }, File.ReadAllLines(path));
        Assert.IsFalse(File.Exists(path + ".partial"));
    }
}
