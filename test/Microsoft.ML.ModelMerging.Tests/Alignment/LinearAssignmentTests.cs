using Microsoft.ML.ModelMerging.Alignment;

namespace Microsoft.ML.ModelMerging.Tests.Alignment;

[TestClass]
public sealed class LinearAssignmentTests
{
    [TestMethod]
    public void MatchesBruteForceOnRandomSmallMatrices()
    {
        var random = new Random(7);
        for (int n = 1; n <= 7; n++)
        {
            for (int trial = 0; trial < 20; trial++)
            {
                // Half the trials on a few integer levels, so ties between optimal assignments are common.
                var matrix = Enumerable.Range(0, n * n)
                    .Select(_ => trial % 2 == 0 ? random.NextDouble() * 20 - 10 : random.Next(3)).ToArray();

                double best = BruteForce(matrix, n, maximize: true), worst = BruteForce(matrix, n, maximize: false);
                int[] max = LinearAssignment.Maximize(matrix, n), min = LinearAssignment.Minimize(matrix, n);

                AssertPermutation(max, n);
                AssertPermutation(min, n);
                Assert.AreEqual(best, LinearAssignment.Value(matrix, n, max), 1e-9, $"maximum, n = {n}, trial {trial}");
                Assert.AreEqual(worst, LinearAssignment.Value(matrix, n, min), 1e-9, $"minimum, n = {n}, trial {trial}");
            }
        }
    }

    [TestMethod]
    public void IdentityAndPermutedIdentityAreFoundExactly()
    {
        const int n = 50;
        var identity = new double[n * n];
        for (int i = 0; i < n; i++) identity[i * n + i] = 1;
        CollectionAssert.AreEqual(Enumerable.Range(0, n).ToArray(), LinearAssignment.Maximize(identity, n));

        int[] shuffled = Enumerable.Range(0, n).ToArray();
        new Random(3).Shuffle(shuffled);
        var permuted = new double[n * n];
        for (int i = 0; i < n; i++) permuted[i * n + shuffled[i]] = 1;
        CollectionAssert.AreEqual(shuffled, LinearAssignment.Maximize(permuted, n));
    }

    [TestMethod]
    public void AllTiesGiveSomePermutation()
    {
        const int n = 6;
        var constant = Enumerable.Repeat(2.5, n * n).ToArray();
        int[] assignment = LinearAssignment.Maximize(constant, n);
        AssertPermutation(assignment, n);
        Assert.AreEqual(2.5 * n, LinearAssignment.Value(constant, n, assignment), 1e-12);
    }

    [TestMethod]
    public void FloatMatricesAndEmptyMatrices()
    {
        float[] matrix = [1, 5, 4, 2];
        CollectionAssert.AreEqual(new[] { 1, 0 }, LinearAssignment.Maximize(matrix, 2));
        Assert.IsEmpty(LinearAssignment.Maximize(ReadOnlySpan<double>.Empty, 0));
    }

    [TestMethod]
    public void RefusesWrongSizesAndNonFiniteValues()
    {
        Assert.ThrowsExactly<ArgumentException>(() => LinearAssignment.Maximize(new double[5], 2));
        var error = Assert.ThrowsExactly<ArgumentException>(() => LinearAssignment.Maximize(new[] { 1, double.NaN, 0, 1 }, 2));
        StringAssert.Contains(error.Message, "non-finite");
    }

    [TestMethod]
    public void LargeRandomMatrixBeatsEveryCheapAlternative()
    {
        // No brute force at this size: the optimum must be at least the greedy and the identity assignment.
        const int n = 300;
        var random = new Random(11);
        var matrix = Enumerable.Range(0, n * n).Select(_ => random.NextDouble()).ToArray();
        int[] assignment = LinearAssignment.Maximize(matrix, n);
        AssertPermutation(assignment, n);
        double value = LinearAssignment.Value(matrix, n, assignment);
        Assert.IsGreaterThanOrEqualTo(LinearAssignment.Value(matrix, n, Enumerable.Range(0, n).ToArray()), value);
        Assert.IsGreaterThanOrEqualTo(LinearAssignment.Value(matrix, n, Greedy(matrix, n)), value);
        Assert.IsGreaterThan(0.99 * n, value, "random uniform costs: the optimum is close to n");
    }

    private static int[] Greedy(double[] matrix, int n)
    {
        var taken = new bool[n];
        var result = new int[n];
        for (int i = 0; i < n; i++)
        {
            int best = Enumerable.Range(0, n).Where(j => !taken[j]).MaxBy(j => matrix[i * n + j]);
            taken[best] = true;
            result[i] = best;
        }

        return result;
    }

    private static double BruteForce(double[] matrix, int n, bool maximize)
    {
        double best = maximize ? double.NegativeInfinity : double.PositiveInfinity;
        foreach (int[] p in Permutations(Enumerable.Range(0, n).ToArray(), 0))
        {
            double value = LinearAssignment.Value(matrix, n, p);
            best = maximize ? Math.Max(best, value) : Math.Min(best, value);
        }

        return best;
    }

    private static IEnumerable<int[]> Permutations(int[] items, int start)
    {
        if (start == items.Length)
        {
            yield return (int[])items.Clone();
            yield break;
        }

        for (int i = start; i < items.Length; i++)
        {
            (items[start], items[i]) = (items[i], items[start]);
            foreach (int[] p in Permutations(items, start + 1)) yield return p;
            (items[start], items[i]) = (items[i], items[start]);
        }
    }

    private static void AssertPermutation(int[] p, int n) =>
        CollectionAssert.AreEquivalent(Enumerable.Range(0, n).ToArray(), p);
}
