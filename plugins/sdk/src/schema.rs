//! Building stream JSON Schemas.

use serde_json::{Map, Value, json};

/// A draft 2020-12 object schema with these required fields and properties (in this order).
pub fn object(required: &[&str], properties: Vec<(&str, Value)>) -> Value {
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": required,
        "properties": properties,
    })
}
