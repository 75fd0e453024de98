namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// The linear assignment problem on a dense square matrix: the permutation π maximising (or minimising) Σᵢ C[i, π(i)].
/// </summary>
/// <remarks>
/// A shortest-augmenting-path solver in the Jonker–Volgenant family (the variant of Crouse, 2016, that SciPy's
/// <c>linear_sum_assignment</c> uses): one Dijkstra search per row over reduced costs with dual potentials, O(n³) in the
/// worst case, exact on real-valued costs. It is written here rather than taken from Google OR-Tools because OR-Tools'
/// <c>LinearSumAssignment</c> takes integer costs (similarities of weights would have to be scaled and rounded, losing the
/// exact optimum the tests check against brute force) and brings a native library of about 100 MB per platform for one
/// function of some sixty lines.
/// </remarks>
internal static class LinearAssignment
{
    /// <summary>The permutation maximising Σᵢ C[i, π(i)] for a row-major n×n matrix; <c>result[i]</c> is row i's column.</summary>
    /// <exception cref="ArgumentException">The matrix is not n×n, or holds NaN or ±∞.</exception>
    public static int[] Maximize(ReadOnlySpan<double> matrix, int n) => Solve(matrix, n, maximize: true);

    /// <summary>The permutation minimising Σᵢ C[i, π(i)] for a row-major n×n matrix; <c>result[i]</c> is row i's column.</summary>
    /// <exception cref="ArgumentException">The matrix is not n×n, or holds NaN or ±∞.</exception>
    public static int[] Minimize(ReadOnlySpan<double> matrix, int n) => Solve(matrix, n, maximize: false);

    /// <summary><see cref="Maximize(ReadOnlySpan{double}, int)"/> of a single-precision matrix (solved in double precision).</summary>
    public static int[] Maximize(ReadOnlySpan<float> matrix, int n)
    {
        var values = new double[matrix.Length];
        for (int i = 0; i < values.Length; i++) values[i] = matrix[i];
        return Maximize(values, n);
    }

    /// <summary>Σᵢ C[i, π(i)]: the value of an assignment.</summary>
    public static double Value(ReadOnlySpan<double> matrix, int n, IReadOnlyList<int> assignment)
    {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += matrix[i * n + assignment[i]];
        return sum;
    }

    private static int[] Solve(ReadOnlySpan<double> matrix, int n, bool maximize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        if (matrix.Length != (long)n * n)
            throw new ArgumentException($"The matrix has {matrix.Length} values; an {n}×{n} matrix has {(long)n * n}.", nameof(matrix));

        // Dijkstra needs non-negative edge costs: shift so the best entry costs 0 (the optimum does not move).
        double best = maximize ? double.NegativeInfinity : double.PositiveInfinity;
        foreach (double value in matrix)
        {
            if (!double.IsFinite(value)) throw new ArgumentException($"The matrix holds a non-finite value ({value}).", nameof(matrix));
            best = maximize ? Math.Max(best, value) : Math.Min(best, value);
        }

        var cost = new double[matrix.Length];
        for (int i = 0; i < cost.Length; i++) cost[i] = maximize ? best - matrix[i] : matrix[i] - best;

        var u = new double[n];                 // row potentials
        var v = new double[n];                 // column potentials
        var shortest = new double[n];          // shortest path cost to each column in the current search
        var path = new int[n];                 // the row a column is reached from
        var columnOfRow = new int[n];
        var rowOfColumn = new int[n];
        var rowSeen = new bool[n];
        var columnSeen = new bool[n];
        var remaining = new int[n];
        Array.Fill(columnOfRow, -1);
        Array.Fill(rowOfColumn, -1);

        for (int row = 0; row < n; row++)
        {
            (int sink, double minimum) = AugmentingPath(cost, n, row, u, v, shortest, path, rowOfColumn, rowSeen, columnSeen, remaining);

            // Keep reduced costs non-negative and zero along the matching.
            u[row] += minimum;
            for (int i = 0; i < n; i++)
            {
                if (rowSeen[i] && i != row) u[i] += minimum - shortest[columnOfRow[i]];
            }

            for (int j = 0; j < n; j++)
            {
                if (columnSeen[j]) v[j] -= minimum - shortest[j];
            }

            // Flip the matching along the path back to the new row.
            for (int j = sink; ;)
            {
                int i = path[j];
                rowOfColumn[j] = i;
                (columnOfRow[i], j) = (j, columnOfRow[i]);
                if (i == row) break;
            }
        }

        return columnOfRow;
    }

    /// <summary>Dijkstra from a free row to the nearest free column over reduced costs; returns the column and its distance.</summary>
    private static (int Sink, double Minimum) AugmentingPath(double[] cost, int n, int row, double[] u, double[] v, double[] shortest,
        int[] path, int[] rowOfColumn, bool[] rowSeen, bool[] columnSeen, int[] remaining)
    {
        double minimum = 0;
        int count = n;
        // Visiting columns in reverse order, as SciPy does, so ties resolve the same way.
        for (int k = 0; k < n; k++) remaining[k] = n - k - 1;
        Array.Clear(rowSeen);
        Array.Clear(columnSeen);
        Array.Fill(shortest, double.PositiveInfinity);

        int sink = -1;
        int i = row;
        while (sink == -1)
        {
            int index = -1;
            double lowest = double.PositiveInfinity;
            rowSeen[i] = true;
            int offset = i * n;
            for (int k = 0; k < count; k++)
            {
                int j = remaining[k];
                double reduced = minimum + cost[offset + j] - u[i] - v[j];
                if (reduced < shortest[j])
                {
                    path[j] = i;
                    shortest[j] = reduced;
                }

                // Among equal distances prefer a free column: the search ends sooner.
                if (shortest[j] < lowest || (shortest[j] == lowest && rowOfColumn[j] == -1))
                {
                    lowest = shortest[j];
                    index = k;
                }
            }

            minimum = lowest;
            int column = remaining[index];
            if (rowOfColumn[column] == -1) sink = column;
            else i = rowOfColumn[column];
            columnSeen[column] = true;
            remaining[index] = remaining[--count];
        }

        return (sink, minimum);
    }
}
