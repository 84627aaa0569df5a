//! A request validator for OpenAPI 3.0 descriptions: what a fake upstream runs on every request
//! it receives, so a connector that sends a path, a query parameter or a body the vendor's
//! description does not have fails its tests.
//!
//! Checked: the operation exists (method and path template; the template with the most literal
//! segments wins, as in OpenAPI's own matching), every query parameter is declared, required
//! ones are present, each value (each item of an exploded array) fits the parameter's schema,
//! and a JSON body fits the operation's request schema. Objects are closed: a schema with
//! `properties` and no `additionalProperties` refuses members it does not declare (the
//! descriptions leave them open; a connector sending an undeclared member is a bug either way).
//! Overlays are explicit and listed by the caller ([`OpenApi::overlay`]).

use std::path::Path;

use serde_json::{Value, json};

/// One operation of a description.
struct Operation {
    method: String,
    /// Path template segments: `Some(literal)` or `None` for a `{parameter}`.
    segments: Vec<Option<String>>,
    /// `operationId`, for messages.
    id: String,
    /// Query parameters: name, required, validator of one value (an item, for arrays), and
    /// whether it is an array.
    query: Vec<(String, bool, jsonschema::Validator, bool)>,
    /// Validator of the JSON body, and whether a body is required.
    body: Option<(jsonschema::Validator, bool)>,
}

/// The operations of one or more descriptions.
pub struct OpenApi {
    ops: Vec<Operation>,
}

/// Adds `additionalProperties: false` to every object schema with `properties` and no
/// `additionalProperties` (recursively).
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, v) in map.iter_mut() {
                close_objects(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// A draft 7 validator of `schema`, with `#/components/...` references resolved in `doc`.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "allOf": [schema],
        "components": doc.get("components").cloned().unwrap_or(json!({})),
    });
    jsonschema::draft7::new(&root).expect("an OpenAPI schema compiles")
}

/// A query value as the JSON its schema expects (`"5"` → 5 for integers, `"true"` → true).
fn coerce(value: &str, schema: &Value) -> Value {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    match kind {
        "integer" => value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.into())),
        "number" => value
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::String(value.into())),
        "boolean" => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(value.into()),
        },
        _ => Value::String(value.into()),
    }
}

impl OpenApi {
    /// Reads every `*.json` description in `dir`, after applying `overlay` to each document;
    /// panics when [`OpenApi::try_load`] fails (the tests' own copy is always there).
    pub fn load(dir: &Path, overlay: impl Fn(&mut Value)) -> Self {
        Self::try_load(dir, overlay).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads every `*.json` description in `dir`, after applying `overlay` to each document.
    /// `Err` names the directory or file and why: missing, unreadable, no description in it,
    /// not JSON.
    pub fn try_load(dir: &Path, overlay: impl Fn(&mut Value)) -> Result<Self, String> {
        let mut ops = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        if files.is_empty() {
            return Err(format!(
                "{}: no OpenAPI description (*.json) in it",
                dir.display()
            ));
        }
        files.sort();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            overlay(&mut doc);
            if let Some(components) = doc.get_mut("components") {
                close_objects(components);
            }
            let paths = doc.get("paths").and_then(Value::as_object).cloned();
            for (template, item) in paths.into_iter().flatten() {
                let shared: Vec<Value> = item
                    .get("parameters")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let Some(item) = item.as_object() else {
                    continue;
                };
                for (method, op) in item {
                    if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                        continue;
                    }
                    ops.push(Self::operation(&doc, &template, method, op, &shared));
                }
            }
        }
        Ok(Self { ops })
    }

    fn operation(
        doc: &Value,
        template: &str,
        method: &str,
        op: &Value,
        shared: &[Value],
    ) -> Operation {
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
            .collect();
        let mut params: Vec<Value> = shared.to_vec();
        params.extend(
            op.get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        let query = params
            .iter()
            .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
            .map(|p| {
                let name = p["name"].as_str().unwrap_or_default().to_string();
                let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                let schema = p.get("schema").cloned().unwrap_or(json!({}));
                let array = schema.get("type").and_then(Value::as_str) == Some("array");
                let item = if array {
                    schema.get("items").cloned().unwrap_or(json!({}))
                } else {
                    schema
                };
                (name, required, validator(doc, &item), array)
            })
            .collect();
        let body = op.get("requestBody").and_then(|b| {
            let schema = b.pointer("/content/application~1json/schema")?;
            let required = b.get("required").and_then(Value::as_bool).unwrap_or(false);
            let mut schema = schema.clone();
            close_objects(&mut schema);
            Some((validator(doc, &schema), required))
        });
        Operation {
            method: method.to_ascii_uppercase(),
            segments,
            id: op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or(template)
                .to_string(),
            query,
            body,
        }
    }

    /// Checks one request: `Ok(operationId)` or `Err(violation)`, one line.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<String, String> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let op = self
            .ops
            .iter()
            .filter(|o| o.method == method && o.segments.len() == parts.len())
            .filter(|o| {
                o.segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| s.as_deref().is_none_or(|lit| lit == *p) && !p.is_empty())
            })
            .max_by_key(|o| o.segments.iter().filter(|s| s.is_some()).count())
            .ok_or_else(|| format!("{method} {path}: no such operation in the descriptions"))?;
        for (name, value) in query {
            let Some((_, _, validator, _)) = op.query.iter().find(|(n, ..)| n == name) else {
                return Err(format!(
                    "{}: query parameter {name:?} is not declared",
                    op.id
                ));
            };
            let schema_value = coerce(value, validator_schema_hint(validator));
            if let Some(e) = validator.iter_errors(&schema_value).next() {
                return Err(format!("{}: query parameter {name}={value:?}: {e}", op.id));
            }
        }
        for (name, required, _, array) in &op.query {
            if *required && !query.iter().any(|(n, _)| n == name) {
                return Err(format!(
                    "{}: required query parameter {name} missing",
                    op.id
                ));
            }
            if !array && query.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(format!("{}: query parameter {name} repeated", op.id));
            }
        }
        match (&op.body, body.is_empty()) {
            (None, false) => return Err(format!("{}: takes no body", op.id)),
            (Some((_, true)), true) => return Err(format!("{}: a body is required", op.id)),
            (Some((validator, _)), false) => {
                let json: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("{}: body is not JSON: {e}", op.id))?;
                let errors: Vec<String> = validator
                    .iter_errors(&json)
                    .take(3)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if !errors.is_empty() {
                    return Err(format!(
                        "{}: body does not fit: {}",
                        op.id,
                        errors.join("; ")
                    ));
                }
            }
            _ => {}
        }
        Ok(op.id.clone())
    }
}

/// Query values are coerced by trying the typed forms the validator accepts: an integer or
/// boolean that parses is checked as such, anything else as a string.
fn validator_schema_hint(validator: &jsonschema::Validator) -> &'static Value {
    static INTEGER: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| json!({"type": "integer"}));
    static BOOLEAN: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| json!({"type": "boolean"}));
    static STRING: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| json!({"type": "string"}));
    if validator.is_valid(&json!(1)) && !validator.is_valid(&json!("x")) {
        &INTEGER
    } else if validator.is_valid(&json!(true)) && !validator.is_valid(&json!("x")) {
        &BOOLEAN
    } else {
        &STRING
    }
}
