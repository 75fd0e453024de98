using Microsoft.ML.Data;

namespace Microsoft.ML.ModelMerging.MLNet;

/// <summary>
/// Makes <see cref="SchemaShape.Column"/> values, whose constructor ML.NET keeps internal, by asking a never-fitted
/// <c>CustomMapping</c> estimator for the shape of a column of the wanted name and type.
/// </summary>
internal static class SchemaShapeColumns
{
    public static SchemaShape.Column Of(TransformsCatalog catalog, string name, DataViewType type) => type switch
    {
        VectorDataViewType { ItemType: var item } when item == NumberDataViewType.Single => Mint<Column<float[]>>(catalog, name, type),
        VectorDataViewType { ItemType: var item } when item == NumberDataViewType.Double => Mint<Column<double[]>>(catalog, name, type),
        VectorDataViewType { ItemType: var item } when item == NumberDataViewType.Byte => Mint<Column<byte[]>>(catalog, name, type),
        VectorDataViewType { ItemType: TextDataViewType } => Mint<Column<string[]>>(catalog, name, type),
        _ when type == NumberDataViewType.Single => Mint<Column<float>>(catalog, name, type),
        _ when type == NumberDataViewType.Double => Mint<Column<double>>(catalog, name, type),
        _ when type == BooleanDataViewType.Instance => Mint<Column<bool>>(catalog, name, type),
        TextDataViewType => Mint<Column<string>>(catalog, name, type),
        _ => throw new NotSupportedException($"No schema shape for column '{name}' of type {type}."),
    };

    /// <summary>The shape of <paramref name="schema"/>'s visible columns (single, double, byte, text and boolean scalars or vectors).</summary>
    public static IEnumerable<SchemaShape.Column> Of(TransformsCatalog catalog, DataViewSchema schema) =>
        schema.Where(c => !c.IsHidden).Select(c => Of(catalog, c.Name, c.Type));

    private static SchemaShape.Column Mint<TColumn>(TransformsCatalog catalog, string name, DataViewType type)
        where TColumn : class, new()
    {
        var output = SchemaDefinition.Create(typeof(TColumn));
        output[0].ColumnName = name;
        output[0].ColumnType = type;
        var estimator = catalog.CustomMapping<NoColumns, TColumn>((_, _) => { }, contractName: null, outputSchemaDefinition: output);
        SchemaShape shape = estimator.GetOutputSchema(new SchemaShape([]));
        return shape.Single(c => c.Name == name);
    }

    private sealed class NoColumns
    {
    }

    private sealed class Column<T>
    {
        public T Value { get; set; } = default!;
    }
}
