//! Schema pieces the derives cannot say on their own: free-form JSON objects, any JSON value,
//! boolean constants, and the shapes of types owned by crates without utoipa.

use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Object, RefOr};

/// `{"type": "object", "additionalProperties": true}`: a JSON object with any members (e.g. a
/// connector's config, whose shape is the connector's `config_schema`).
pub fn free_object() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
        .build()
}

/// A free-form object or null.
pub fn nullable_free_object() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
        .build()
}

/// A JSON Schema document (2020-12), as an object.
pub fn json_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
        .description(Some("A JSON Schema (draft 2020-12) document."))
        .build()
}

/// Any JSON value.
pub fn any_json() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .build()
}

/// `{"type": "boolean", "enum": [true]}`.
pub fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

/// `{"type": "boolean", "enum": [false]}`.
pub fn always_false() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
        .build()
}

/// A nullable reference to a component schema: `oneOf: [null, $ref]`.
pub fn nullable_ref(name: &str) -> RefOr<Schema> {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(utoipa::openapi::Ref::from_schema_name(name))
        .into()
}

/// A column of a stream as committed (`sluice_storage::commit::ColumnSpec`, which has no derive).
pub fn column_spec() -> Object {
    ObjectBuilder::new()
        .description(Some("A column of a stream as committed."))
        .property("name", ObjectBuilder::new().schema_type(Type::String))
        .required("name")
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "DuckDB type, e.g. BIGINT, VARCHAR, JSON, TIMESTAMP WITH TIME ZONE.",
                )),
        )
        .required("type")
        .property("nullable", ObjectBuilder::new().schema_type(Type::Boolean))
        .required("nullable")
        .build()
}

/// The connector that produced committed data (`sluice_storage::commit::ConnectorRef`).
pub fn connector_ref() -> Object {
    ObjectBuilder::new()
        .description(Some("The connector that produced the committed data."))
        .property("id", ObjectBuilder::new().schema_type(Type::String))
        .required("id")
        .property("version", ObjectBuilder::new().schema_type(Type::String))
        .required("version")
        .property(
            "sha256",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("SHA-256 of the connector's .wasm file, hex.")),
        )
        .required("sha256")
        .build()
}
