//! HubSpot properties as columns.
//!
//! Every object type has its own property list (`GET /crm/v3/properties/{objectType}`,
//! "CRM API | Properties", developers.hubspot.com). Each property has a `name` and a `type`:
//! `string`, `number`, `bool`, `date`, `datetime`, `enumeration`, `phone_number`, `json`,
//! `object_coordinates`, ... HubSpot sends every value as a string (`"17"`, `"true"`,
//! `"2024-05-01"`, `"2024-05-01T10:00:00.123Z"`; `SimplePublicObject.properties` is a map of
//! strings in the CRM OpenAPI documents), so values are converted to the JSON type their column
//! has.
//!
//! Flattening: a record is `id`, `createdAt`, `updatedAt`, `archived`, `archivedAt` (the
//! object's own fields) and one top-level field per property, named after it. A property whose
//! name clashes with one of those fields (compared case-insensitively, as the host compares
//! column names) or starts with `_sluice_` (reserved by the host) is named `property_<name>`.

use sluice_sdk::serde_json::{Map, Number, Value};
use sluice_sdk::{Result, json};

use crate::time::{format_date, format_ms};

/// The object's own fields, before its properties.
pub const OBJECT_FIELDS: [&str; 5] = ["id", "createdAt", "updatedAt", "archived", "archivedAt"];

/// How a property's values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `number`: a JSON number.
    Number,
    /// `bool`: a JSON boolean.
    Bool,
    /// `date`: a `YYYY-MM-DD` string (format `date`).
    Date,
    /// `datetime`: an ISO 8601 string with milliseconds (format `date-time`).
    DateTime,
    /// Anything else (`string`, `enumeration`, `phone_number`, `json`, ...): the string as sent.
    Text,
}

impl Kind {
    /// The kind of a HubSpot property `type`.
    pub fn of(hubspot_type: &str) -> Self {
        match hubspot_type {
            "number" => Kind::Number,
            "bool" | "boolean" => Kind::Bool,
            "date" => Kind::Date,
            "datetime" | "date-time" => Kind::DateTime,
            _ => Kind::Text,
        }
    }

    /// The JSON Schema of a column of this kind (always nullable: any property may be unset).
    pub fn schema(self) -> Value {
        match self {
            Kind::Number => json!({"type": ["number", "null"]}),
            Kind::Bool => json!({"type": ["boolean", "null"]}),
            Kind::Date => json!({"type": ["string", "null"], "format": "date"}),
            Kind::DateTime => json!({"type": ["string", "null"], "format": "date-time"}),
            Kind::Text => json!({"type": ["string", "null"]}),
        }
    }

    /// A property value as HubSpot sent it, typed for its column. An empty string is `null`
    /// for typed kinds; a value that does not parse is kept as the string it was (the host
    /// keeps it, byte for byte, in `_sluice_errors`: drift never loses data). `date` and
    /// `datetime` values sent as epoch milliseconds (older portals) become ISO strings.
    pub fn value(self, raw: &Value) -> Value {
        let Some(text) = raw.as_str() else {
            return raw.clone();
        };
        if self != Kind::Text && text.trim().is_empty() {
            return Value::Null;
        }
        let epoch_ms = || text.parse::<i64>().ok();
        match self {
            Kind::Text => raw.clone(),
            Kind::Number => text
                .trim()
                .parse::<Number>()
                .map_or_else(|_| raw.clone(), Value::Number),
            Kind::Bool => match text.trim() {
                "true" | "TRUE" | "True" => Value::Bool(true),
                "false" | "FALSE" | "False" => Value::Bool(false),
                _ => raw.clone(),
            },
            Kind::Date => match epoch_ms() {
                Some(ms) => Value::String(format_date(ms)),
                None => raw.clone(),
            },
            Kind::DateTime => match epoch_ms() {
                Some(ms) => Value::String(format_ms(ms)),
                None => raw.clone(),
            },
        }
    }
}

/// One property of an object type: its name, column and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// HubSpot's internal name (what search and list requests ask for).
    pub name: String,
    /// The record field it becomes (see the module doc).
    pub column: String,
    pub kind: Kind,
    /// HubSpot's label, kept as the column's `title`.
    pub label: String,
}

/// The record field for property `name`.
pub fn column_of(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let clashes = OBJECT_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(&lower))
        || lower.starts_with("_sluice_");
    if clashes {
        format!("property_{name}")
    } else {
        name.to_string()
    }
}

/// The properties of a `GET /crm/v3/properties/{objectType}` answer (`{"results": [{name,
/// label, type, ...}]}`), in HubSpot's order; entries without a name are skipped.
pub fn parse_properties(body: &Value) -> Result<Vec<Property>> {
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            sluice_sdk::ConnectorError::internal("properties answer without `results`")
        })?;
    Ok(results
        .iter()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_string();
            let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
            Some(Property {
                column: column_of(&name),
                kind: Kind::of(text("type")),
                label: text("label").to_string(),
                name,
            })
        })
        .collect())
}

/// The JSON Schema of an object stream: the object's fields, then one column per property.
pub fn object_schema(properties: &[Property]) -> Value {
    let mut props = Map::new();
    props.insert("id".into(), json!({"type": "string"}));
    props.insert("createdAt".into(), Kind::DateTime.schema());
    props.insert("updatedAt".into(), Kind::DateTime.schema());
    props.insert("archived".into(), json!({"type": ["boolean", "null"]}));
    props.insert("archivedAt".into(), Kind::DateTime.schema());
    for p in properties {
        let mut schema = p.kind.schema();
        if !p.label.is_empty() {
            schema["title"] = Value::String(p.label.clone());
        }
        props.insert(p.column.clone(), schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id"],
        "properties": props,
    })
}

/// A record of a `SimplePublicObject` (`{id, createdAt, updatedAt, archived, archivedAt?,
/// properties: {name: string}}`): the object's fields, then every property typed by its kind.
/// A property the list does not know (added since it was read) keeps its name and its string:
/// undeclared, it goes to `_sluice_extra`.
pub fn record(object: &Value, properties: &[Property]) -> Map<String, Value> {
    let mut out = Map::new();
    for field in OBJECT_FIELDS {
        if let Some(v) = object.get(field) {
            out.insert(field.to_string(), v.clone());
        }
    }
    if let Some(Value::Number(n)) = out.get("id") {
        let id = n.to_string();
        out.insert("id".into(), Value::String(id));
    }
    if let Some(values) = object.get("properties").and_then(Value::as_object) {
        // HubSpot answers the properties in the order they were asked for, which is the
        // list's: each one is looked for from the one after the last found, then from the
        // start (names are unique in the list), so a record costs one pass, not one per value.
        let mut from = 0;
        for (name, raw) in values {
            let found = properties[from..]
                .iter()
                .position(|p| &p.name == name)
                .map(|i| from + i)
                .or_else(|| properties[..from].iter().position(|p| &p.name == name));
            match found {
                Some(i) => {
                    from = i + 1;
                    let p = &properties[i];
                    out.insert(p.column.clone(), p.kind.value(raw))
                }
                None => out.insert(column_of(name), raw.clone()),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_hubspot_types() {
        assert_eq!(Kind::of("number"), Kind::Number);
        assert_eq!(Kind::of("bool"), Kind::Bool);
        assert_eq!(Kind::of("date"), Kind::Date);
        assert_eq!(Kind::of("datetime"), Kind::DateTime);
        for text in [
            "string",
            "enumeration",
            "phone_number",
            "json",
            "object_coordinates",
            "",
        ] {
            assert_eq!(Kind::of(text), Kind::Text, "{text}");
        }
        assert_eq!(Kind::Number.schema(), json!({"type": ["number", "null"]}));
        assert_eq!(Kind::DateTime.schema()["format"], "date-time");
        assert_eq!(Kind::Date.schema()["format"], "date");
    }

    #[test]
    fn values_are_typed_and_never_lost() {
        let s = |v: &str| Value::String(v.into());
        assert_eq!(Kind::Number.value(&s("17")), json!(17));
        assert_eq!(Kind::Number.value(&s("17.25")).to_string(), "17.25");
        assert_eq!(
            Kind::Number.value(&s("18446744073709551616")).to_string(),
            "18446744073709551616",
            "the literal is kept (arbitrary_precision)"
        );
        assert_eq!(Kind::Number.value(&s("12 apples")), s("12 apples"));
        assert_eq!(Kind::Number.value(&s("")), Value::Null);
        assert_eq!(Kind::Bool.value(&s("true")), json!(true));
        assert_eq!(Kind::Bool.value(&s("false")), json!(false));
        assert_eq!(Kind::Bool.value(&s("maybe")), s("maybe"));
        assert_eq!(Kind::Date.value(&s("2024-05-01")), s("2024-05-01"));
        assert_eq!(Kind::Date.value(&s("1700000000000")), s("2023-11-14"));
        assert_eq!(
            Kind::DateTime.value(&s("1700000000123")),
            s("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(Kind::Text.value(&s("")), s(""));
        assert_eq!(Kind::Text.value(&Value::Null), Value::Null);
    }

    #[test]
    fn records_are_flat_with_renamed_clashes() {
        assert_eq!(column_of("email"), "email");
        assert_eq!(column_of("createdat"), "property_createdat");
        assert_eq!(column_of("ID"), "property_ID");
        assert_eq!(column_of("_sluice_x"), "property__sluice_x");
        let props = parse_properties(&json!({"results": [
            {"name": "amount", "label": "Amount", "type": "number", "fieldType": "number"},
            {"name": "closed", "label": "Closed", "type": "bool"},
            {"name": "archived", "label": "Archived?", "type": "string"},
            {"label": "no name"}
        ]}))
        .expect("parses");
        assert_eq!(props.len(), 3);
        let schema = object_schema(&props);
        assert_eq!(schema["properties"]["amount"]["title"], "Amount");
        assert_eq!(
            schema["properties"]["property_archived"]["type"][0],
            "string"
        );
        let r = record(
            &json!({"id": "7", "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00.5Z",
                    "archived": false, "properties": {"amount": "12.5", "closed": "true",
                    "archived": "yes", "brand_new": "x"}}),
            &props,
        );
        assert_eq!(r["id"], "7");
        // Out of the list's order, each value still finds its property.
        let reversed = record(
            &json!({"id": "8", "properties": {"archived": "no", "closed": "false", "amount": "3"}}),
            &props,
        );
        assert_eq!(reversed["property_archived"], "no");
        assert_eq!(reversed["closed"], false);
        assert_eq!(reversed["amount"].to_string(), "3");
        assert_eq!(r["amount"].to_string(), "12.5");
        assert_eq!(r["closed"], true);
        assert_eq!(r["property_archived"], "yes");
        assert_eq!(r["archived"], false);
        assert_eq!(
            r["brand_new"], "x",
            "an unknown property is kept as it came"
        );
        assert!(parse_properties(&json!({})).is_err());
    }
}
