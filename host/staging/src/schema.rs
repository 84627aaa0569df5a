//! From a stream's JSON Schema to typed columns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One declared column of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Column {
    pub name: String,
    /// DuckDB / Parquet logical type: BIGINT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMPTZ, DATE or JSON.
    #[serde(rename = "type")]
    pub duck_type: String,
    pub nullable: bool,
}

/// The columns of a stream: every property of its JSON Schema, in declaration order.
/// Primary-key fields are not nullable; a property with no single scalar type is JSON.
///
/// SQL column names are case-insensitive (DuckDB, and most readers of the Parquet): a property
/// whose name equals a host column (`_sluice_*`) or another property's in any case is not made
/// a column, so its values are kept in `_sluice_extra` instead of breaking the conversion. Of
/// names equal but for case, a primary-key field is the column (the deduplicating view
/// partitions by it), else the first in order.
pub fn columns_for(schema: &Value, primary_key: &[String]) -> Vec<Column> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return vec![];
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut seen: std::collections::HashSet<String> = primary_key
        .iter()
        .filter(|k| props.contains_key(k.as_str()))
        .map(|k| k.to_lowercase())
        .collect();
    props
        .iter()
        .filter(|(name, _)| {
            let folded = name.to_lowercase();
            let is_key = primary_key.contains(name);
            !folded.starts_with("_sluice_") && (is_key || seen.insert(folded))
        })
        .map(|(name, prop)| {
            let (duck_type, null_in_type) = duck_type(prop);
            let is_key = primary_key.iter().any(|k| k == name);
            Column {
                name: name.clone(),
                duck_type: duck_type.to_string(),
                nullable: !is_key && (null_in_type || !required.contains(&name.as_str())),
            }
        })
        .collect()
}

fn duck_type(prop: &Value) -> (&'static str, bool) {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let nullable = types.contains(&"null");
    let non_null: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    let format = prop.get("format").and_then(Value::as_str);
    let t = match (non_null.as_slice(), format) {
        (["integer"], _) => "BIGINT",
        (["number"], _) | (["integer", "number"] | ["number", "integer"], _) => "DOUBLE",
        (["boolean"], _) => "BOOLEAN",
        (["string"], Some("date-time")) => "TIMESTAMPTZ",
        (["string"], Some("date")) => "DATE",
        (["string"], _) => "VARCHAR",
        _ => "JSON",
    };
    (t, nullable)
}
