namespace Microsoft.ML.ModelMerging.Alignment;

/// <summary>
/// Permutations that weight matching chooses together in one step: <see cref="Blocks"/> equal blocks moved as wholes by one
/// block permutation shared by every member, and, inside each block, a permutation of its own per member.
/// </summary>
/// <remarks>
/// One member with one block is a plain permutation (the residual stream, an MLP's hidden units). A block of attention has
/// two members, the query/key dimensions and the value dimensions of a head, and one block per head: heads move whole (q, k,
/// v rows and out_proj columns together), while within a head the q·k dimensions and the v dimensions may be reordered
/// independently.
/// </remarks>
/// <param name="Name">What the step is called in progress and errors.</param>
/// <param name="Members">Names of the permutations (keys of <see cref="PermutationSpec.Sizes"/>), all of one size.</param>
/// <param name="Blocks">How many equal blocks that size is cut into (attention heads); 1 for a plain permutation.</param>
internal sealed record PermutationGroup(string Name, IReadOnlyList<string> Members, int Blocks = 1);
