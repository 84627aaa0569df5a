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

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use sluice_sdk::fields::{Fields, RecordWriter};
use sluice_sdk::serde_json::value::RawValue;
use sluice_sdk::serde_json::{Map, Number, Value};
use sluice_sdk::{Result, json};

use crate::time::{format_date, format_ms, parse_ms};

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

    /// A property value as HubSpot sent it (JSON text), typed for its column (JSON text). An
    /// empty string is `null` for typed kinds; a value that does not parse is kept as the string
    /// it was (the host keeps it, byte for byte, in `_sluice_errors`: drift never loses data).
    /// `date` and `datetime` values sent as epoch milliseconds (older portals) become ISO
    /// strings. A `Text` value, and any string kept, goes through as HubSpot wrote it; only a
    /// typed kind's string is decoded (borrowed when it holds no escape).
    pub fn typed(self, raw: &RawValue) -> Cow<'_, str> {
        let text = raw.get();
        if self == Kind::Text {
            return compact(text);
        }
        let Some(value) = string_of(text) else {
            return compact(text);
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Cow::Borrowed("null");
        }
        let kept = Cow::Borrowed(text);
        match self {
            // A plain decimal is written as it is (what `Number` would write of it).
            Kind::Number if is_plain_decimal(trimmed) => match value {
                Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                Cow::Owned(_) => Cow::Owned(trimmed.to_string()),
            },
            Kind::Number => trimmed
                .parse::<Number>()
                .map_or(kept, |n| Cow::Owned(n.to_string())),
            Kind::Bool => match trimmed {
                "true" | "TRUE" | "True" => Cow::Borrowed("true"),
                "false" | "FALSE" | "False" => Cow::Borrowed("false"),
                _ => kept,
            },
            Kind::Date => match value.parse::<i64>() {
                Ok(ms) => Cow::Owned(format!("\"{}\"", format_date(ms))),
                Err(_) => kept,
            },
            Kind::DateTime => match value.parse::<i64>() {
                Ok(ms) => Cow::Owned(format!("\"{}\"", format_ms(ms))),
                Err(_) => kept,
            },
            Kind::Text => kept,
        }
    }

    /// [`Kind::typed`] on a `Value` (what the tests state values in).
    #[cfg(test)]
    pub fn value(self, raw: &Value) -> Value {
        let raw = RawValue::from_string(raw.to_string()).expect("JSON");
        sluice_sdk::serde_json::from_str(&self.typed(&raw)).expect("typed text is JSON")
    }
}

/// Whether `text` is `-?(0|[1-9][0-9]*)(\.[0-9]+)?`: a JSON number without an exponent, which
/// `Number` keeps as it is.
fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(all_digits)
}

/// The text of a JSON string (`text` is JSON): borrowed when it holds no escape; `None` when
/// `text` is not a string.
fn string_of(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return text.get(1..text.len() - 1).map(Cow::Borrowed);
    }
    sluice_sdk::serde_json::from_str::<String>(text)
        .ok()
        .map(Cow::Owned)
}

/// A value's JSON text as a record carries it: a string, `true`, `false` or `null` as it came;
/// a number, object or array as a `Value` writes it (the exponent of a number spelled `e+`,
/// an object compact; HubSpot sends none of these as a property or object field).
fn compact(text: &str) -> Cow<'_, str> {
    if text.starts_with([
        '{', '[', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
    ]) && let Ok(v) = sluice_sdk::serde_json::from_str::<Value>(text)
    {
        return Cow::Owned(v.to_string());
    }
    Cow::Borrowed(text)
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

/// A field of an object: its name (borrowed when it holds no escape) and its value's JSON text.
type Field<'a> = (Cow<'a, str>, &'a RawValue);

/// A `SimplePublicObject` of a list or search page, read in one pass of its text: its
/// top-level fields and the fields of its `properties`, values as JSON text borrowed from the
/// page.
#[derive(Default)]
pub struct Object<'a> {
    fields: Vec<Field<'a>>,
    /// Of the last `properties` given.
    properties: Vec<Field<'a>>,
}

impl<'a> Object<'a> {
    /// The value of a top-level field (of a key given twice, the last).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        last(&self.fields, key)
    }

    /// An object (JSON text) whatever its `properties` hold (one that is not an object has
    /// none), or the empty object of a value that is not one: what a tree of it reads. For
    /// what the one-pass read refuses.
    pub fn lenient(text: &'a str) -> Self {
        let Ok(fields) = Fields::parse(text) else {
            return Self::default();
        };
        let pairs = |f: &Fields<'a>| -> Vec<Field<'a>> {
            f.iter()
                .map(|(k, v)| (Cow::Owned(k.as_str().to_string()), v))
                .collect()
        };
        let properties = fields
            .get("properties")
            .and_then(|p| Fields::parse(p.get()).ok())
            .map(|p| pairs(&p))
            .unwrap_or_default();
        let mut fields = pairs(&fields);
        fields.retain(|(k, _)| k != "properties");
        Self { fields, properties }
    }
}

/// The value of `key` among `fields`: of a key given twice, the last.
fn last<'a>(fields: &[Field<'a>], key: &str) -> Option<&'a RawValue> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// An object key, borrowed when it holds no escape.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The fields of an object (an error for any other value).
struct FieldList<'a>(Vec<Field<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FieldList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FieldList<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<FieldList<'a>, A::Error> {
                let mut out = Vec::with_capacity(16);
                while let Some((k, v)) = m.next_entry::<Name<'a>, &'a RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(FieldList(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The one-pass read: an error for a value that is not an object, or `properties` that are
/// not one (read those with [`Object::lenient`]).
impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Object<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a HubSpot object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Object<'a>, A::Error> {
                let mut object = Object {
                    fields: Vec::with_capacity(8),
                    properties: Vec::new(),
                };
                while let Some(key) = m.next_key::<Name<'a>>()? {
                    if key.0 == "properties" {
                        object.properties = m.next_value::<FieldList<'a>>()?.0;
                    } else {
                        object.fields.push((key.0, m.next_value()?));
                    }
                }
                Ok(object)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The object's fields in the order a record lists its keys (byte order, as every key is).
const OBJECT_FIELDS_SORTED: [&str; 5] = ["archived", "archivedAt", "createdAt", "id", "updatedAt"];

/// An object type's properties, ready to make records: the list, and its entries in the order
/// of their columns (then names).
pub struct Columns<'p> {
    properties: &'p [Property],
    sorted: Vec<usize>,
}

impl<'p> Columns<'p> {
    /// The columns of `properties` (the list as [`parse_properties`] read it).
    pub fn new(properties: &'p [Property]) -> Self {
        let mut sorted: Vec<usize> = (0..properties.len()).collect();
        sorted.sort_by(|a, b| {
            let (a, b) = (&properties[*a], &properties[*b]);
            (&a.column, &a.name).cmp(&(&b.column, &b.name))
        });
        Self { properties, sorted }
    }
}

/// A record's JSON text and what a sync reads of it.
#[derive(Debug)]
pub struct Record<'a> {
    /// The record: a JSON object.
    pub json: String,
    /// Its `id` as text (HubSpot sends a string; a number is written as its text).
    pub id: Option<Cow<'a, str>>,
    /// Its `updatedAt`, epoch ms.
    pub updated_ms: Option<i64>,
    /// Its `archivedAt`, epoch ms.
    pub archived_ms: Option<i64>,
}

/// One property value of a record: column, HubSpot name, kind (`None`: a property the list
/// does not know, kept as its string), JSON text.
type Entry<'v> = (&'v str, &'v str, Option<Kind>, &'v RawValue);

/// A record of a `SimplePublicObject` (`{id, createdAt, updatedAt, archived, archivedAt?,
/// properties: {name: string}}`): the object's fields, then every property typed by its kind;
/// `archived` (the deletion marker of an archived read) sets `archived: true`. A property the
/// list does not know (added since it was read) keeps its name and its string: undeclared, it
/// goes to `_sluice_extra`.
///
/// Written field by field from the object's text, with the keys and values a map of the
/// object would hold: each key once, in byte order; of a key given twice (by HubSpot, or two
/// properties with one column), the value of the last (of the property whose name sorts last).
pub fn record<'a>(object: &Object<'a>, columns: &Columns<'_>, archived: bool) -> Record<'a> {
    let properties = columns.properties;
    let mut slots: Vec<Option<&RawValue>> = vec![None; properties.len()];
    let mut unknown: Vec<(String, &str, &RawValue)> = Vec::new();
    // HubSpot answers the properties in the order they were asked for, which is the list's:
    // each one is looked for from the one after the last found, then from the start (names
    // are unique in the list), so a record costs one pass, not one per value.
    let mut from = 0;
    for (name, raw) in &object.properties {
        let (name, raw) = (name.as_ref(), *raw);
        let found = properties[from..]
            .iter()
            .position(|p| p.name == name)
            .map(|i| from + i)
            .or_else(|| properties[..from].iter().position(|p| p.name == name));
        match found {
            Some(i) => {
                from = i + 1;
                // A name given twice: the last value, as a map of the properties holds.
                slots[i] = Some(raw);
            }
            None => unknown.push((column_of(name), name, raw)),
        }
    }
    let known = columns.sorted.iter().filter_map(|&i| {
        let p = &properties[i];
        slots[i].map(|raw| (p.column.as_str(), p.name.as_str(), Some(p.kind), raw))
    });
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(properties.len() + unknown.len());
    entries.extend(known);
    if !unknown.is_empty() {
        entries.extend(
            unknown
                .iter()
                .map(|(c, n, raw)| (c.as_str(), *n, None, *raw)),
        );
        // Stable: of a name given twice, the later stays later.
        entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    }

    let mut out = RecordWriter::with_capacity(
        text_len(&object.fields) + text_len(&object.properties) + 8 * entries.len(),
    );
    // The object's own fields, by their place in OBJECT_FIELDS_SORTED (of a key given twice,
    // the last).
    let mut own: [Option<&RawValue>; 5] = [None; 5];
    for (key, raw) in &object.fields {
        if let Some(i) = OBJECT_FIELDS_SORTED.iter().position(|f| f == key) {
            own[i] = Some(*raw);
        }
    }
    let mut fields = OBJECT_FIELDS_SORTED.iter().zip(own).peekable();
    let write_field = |out: &mut RecordWriter, (field, raw): (&&str, Option<&RawValue>)| {
        let field: &str = field;
        if field == "archived" && archived {
            out.raw(field, "true");
            return;
        }
        let Some(raw) = raw else {
            return;
        };
        match (field, number_text(raw)) {
            // An id sent as a number: its text, as a string.
            ("id", Some(id)) => out.str(field, Some(&id)),
            _ => out.raw(field, &compact(raw.get())),
        }
    };
    let mut entries = entries.iter().peekable();
    while let Some(&(column, _, kind, raw)) = entries.next() {
        // Of one column given twice, the last entry's value.
        if entries.peek().is_some_and(|next| next.0 == column) {
            continue;
        }
        while let Some(field) = fields.next_if(|(f, _)| **f < column) {
            write_field(&mut out, field);
        }
        match kind {
            Some(kind) => out.raw(column, &kind.typed(raw)),
            None => out.raw(column, &compact(raw.get())),
        }
    }
    for field in fields {
        write_field(&mut out, field);
    }

    let [_, archived_at, _, id, updated_at] = own;
    let time = |v: Option<&RawValue>| {
        v.and_then(|v| string_of(v.get()))
            .and_then(|t| parse_ms(&t))
    };
    Record {
        json: out.finish(),
        id: id.and_then(|v| string_of(v.get()).or_else(|| number_text(v).map(Cow::Owned))),
        updated_ms: time(updated_at),
        archived_ms: time(archived_at),
    }
}

/// Bytes of fields' names and values.
fn text_len(fields: &[Field<'_>]) -> usize {
    fields
        .iter()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum()
}

/// The text of a JSON number as a `Value` writes it; `None` when `raw` is not a number.
fn number_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if !text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return None;
    }
    text.parse::<Number>().ok().map(|n| n.to_string())
}

/// [`record`] of a `Value`, as a map (what the tests state objects in).
#[cfg(test)]
pub fn record_value(object: &Value, properties: &[Property]) -> Map<String, Value> {
    let text = object.to_string();
    let object: Object<'_> = sluice_sdk::serde_json::from_str(&text).expect("an object");
    let r = record(&object, &Columns::new(properties), false);
    sluice_sdk::serde_json::from_str(&r.json).expect("a record is a JSON object")
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
        let r = record_value(
            &json!({"id": "7", "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00.5Z",
                    "archived": false, "properties": {"amount": "12.5", "closed": "true",
                    "archived": "yes", "brand_new": "x"}}),
            &props,
        );
        assert_eq!(r["id"], "7");
        // Out of the list's order, each value still finds its property.
        let reversed = record_value(
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

    /// The record as it was made before records were written field by field (a map of
    /// values, keys in byte order): the reference the written records are held to.
    fn map_record(object: &Value, properties: &[Property], archived: bool) -> String {
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
            for (name, raw) in values {
                match properties.iter().find(|p| &p.name == name) {
                    Some(p) => out.insert(p.column.clone(), map_value(p.kind, raw)),
                    None => out.insert(column_of(name), raw.clone()),
                };
            }
        }
        if archived {
            out.insert("archived".into(), Value::Bool(true));
        }
        Value::Object(out).to_string()
    }

    /// A value typed as it was before [`Kind::typed`], on a `Value`.
    fn map_value(kind: Kind, raw: &Value) -> Value {
        let Some(text) = raw.as_str() else {
            return raw.clone();
        };
        if kind != Kind::Text && text.trim().is_empty() {
            return Value::Null;
        }
        let epoch_ms = || text.parse::<i64>().ok();
        match kind {
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
            Kind::Date => {
                epoch_ms().map_or_else(|| raw.clone(), |ms| Value::String(format_date(ms)))
            }
            Kind::DateTime => {
                epoch_ms().map_or_else(|| raw.clone(), |ms| Value::String(format_ms(ms)))
            }
        }
    }

    fn props(list: &[(&str, &str)]) -> Vec<Property> {
        list.iter()
            .map(|(name, kind)| Property {
                name: name.to_string(),
                column: column_of(name),
                kind: Kind::of(kind),
                label: String::new(),
            })
            .collect()
    }

    /// `object` (JSON text) written by [`record`] and by the map it was made as before.
    fn both<'a>(object: &'a str, properties: &[Property], archived: bool) -> (Record<'a>, String) {
        let columns = Columns::new(properties);
        let written = record(&Object::lenient(object), &columns, archived);
        // The one-pass read, where it reads the object, writes the same record.
        if let Ok(one_pass) = sluice_sdk::serde_json::from_str::<Object<'_>>(object) {
            assert_eq!(
                record(&one_pass, &columns, archived).json,
                written.json,
                "{object}"
            );
        } else {
            assert!(!object.contains(r#""properties":{"#), "{object}");
        }
        let value: Value = sluice_sdk::serde_json::from_str(object).expect("JSON");
        (written, map_record(&value, properties, archived))
    }

    #[test]
    fn written_records_hold_what_the_map_held() {
        let list = props(&[
            ("email", "string"),
            ("amount", "number"),
            ("closed", "bool"),
            ("born", "date"),
            ("seen", "datetime"),
            ("Zed", "string"),
            ("id", "string"),
            ("property_id", "string"),
        ]);
        let cases = [
            // Every kind, in the list's order, and out of it.
            r#"{"id":"1","createdAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-02T00:00:00.5Z","archived":false,"properties":{"email":"a@b","amount":"12.50","closed":"True","born":"1700000000000","seen":"1700000000123","Zed":"z"}}"#,
            r#"{"properties":{"seen":"2024-01-01T00:00:00Z","closed":" false ","amount":" 7 ","email":"","born":"","Zed":null},"id":"2"}"#,
            // Escapes: in a text value, a typed value, an unknown name and value.
            r#"{"id":"3","properties":{"email":"x\u00e9\"q\\","amount":"1\u0032","closed":"tru\u0065","seen":"17\u00300000000000","n\u00e9w":"v\n","born":"\u0031700000000000"}}"#,
            // Numbers: an id sent as a number, a number that is not one, a huge one, exponents.
            r#"{"id":18446744073709551616,"properties":{"amount":"18446744073709551616.000","email":"12","closed":"maybe","born":"2024-05-01","seen":"nope"}}"#,
            r#"{"id":1E3,"properties":{"amount":"1E3","Zed":"1e-2"}}"#,
            r#"{"id":"14","properties":{"amount":"-0.50"}}"#,
            r#"{"id":"15","properties":{"amount":"007"}}"#,
            r#"{"id":"16","properties":{"amount":" 42 "}}"#,
            r#"{"id":"17","properties":{"amount":"1."}}"#,
            r#"{"id":"18","properties":{"amount":".5"}}"#,
            r#"{"id":"19","properties":{"amount":"-"}}"#,
            r#"{"id":"20","properties":{"amount":"\t4\u0032.5 "}}"#,
            r#"{"id":"5","properties":{"amount":"12 apples","email":17.50,"Zed":true,"closed":{"b":1, "a":[1, 2]}}}"#,
            // Unknown properties: one clashing with an object field, one with a known column,
            // one upper case (sorts before every lower-case key).
            r#"{"id":"6","updatedAt":"2024-02-01T00:00:00.123Z","properties":{"brand_new":"x","UpdatedAt":"u","Apple":"a","zz":"z","email":"e"}}"#,
            // Two names with one column ("id" and "property_id"), both orders.
            r#"{"id":"7","properties":{"id":"from id","property_id":"from property_id"}}"#,
            r#"{"id":"8","properties":{"property_id":"from property_id","id":"from id"}}"#,
            // Duplicate keys: of the object, of its properties (known and unknown).
            r#"{"id":"9","id":"10","properties":{"email":"first","amount":"1","email":"second","new":"a","new":"b"},"properties":{"email":"third","new":"c","new":"d"}}"#,
            // No properties; properties that are not an object; an archived record.
            r#"{"id":"11","archivedAt":"2024-03-01T00:00:00Z","archived":true}"#,
            r#"{"id":"12","properties":null}"#,
            r#"{"id":"13","properties":["email"]}"#,
            r#"{}"#,
        ];
        for case in cases {
            for archived in [false, true] {
                let (written, map) = both(case, &list, archived);
                let parsed: Value =
                    sluice_sdk::serde_json::from_str(&written.json).expect("a JSON object");
                if case.contains('\\') {
                    // Strings keep HubSpot's escapes: the same values, keys once, in order.
                    let expected: Value = sluice_sdk::serde_json::from_str(&map).expect("JSON");
                    assert_eq!(parsed, expected, "{case} (archived: {archived})");
                    let fields = Fields::parse(&written.json).expect("an object");
                    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
                } else {
                    assert_eq!(written.json, map, "{case} (archived: {archived})");
                }
                assert_eq!(
                    written.id.as_deref(),
                    parsed.get("id").and_then(Value::as_str),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn plain_decimals_are_what_a_number_writes() {
        for text in ["0", "-0", "17", "-17.250", "0.5", "18446744073709551616.0"] {
            assert!(is_plain_decimal(text), "{text}");
            assert_eq!(text.parse::<Number>().expect("a number").to_string(), text);
        }
        for text in [
            "", "-", "007", "1.", ".5", "1e3", "1E3", "+1", "1 ", "0x1", "1.2.3", "--1",
        ] {
            assert!(!is_plain_decimal(text), "{text}");
        }
    }

    #[test]
    fn written_records_keep_hubspot_text_and_read_their_times() {
        let list = props(&[("email", "string"), ("amount", "number")]);
        let object = r#"{"id":"4\u0032","updatedAt":"2023-11-14T22:13:20.123Z","archivedAt":"2023-11-14T22:13:20Z","properties":{"email":"x\u00e9","amount":"17.50","new":"n\u00e9w"}}"#;
        let (r, map) = both(object, &list, false);
        // A text value and an unknown one go through as HubSpot wrote them (the map wrote
        // them again, unescaped); a number keeps its digits.
        assert!(r.json.contains(r#""email":"x\u00e9""#), "{}", r.json);
        assert!(r.json.contains(r#""new":"n\u00e9w""#), "{}", r.json);
        assert!(r.json.contains(r#""amount":17.50"#), "{}", r.json);
        assert!(map.contains(r#""email":"xé""#), "{map}");
        let parsed: Value = sluice_sdk::serde_json::from_str(&r.json).expect("JSON");
        assert_eq!(
            parsed,
            sluice_sdk::serde_json::from_str::<Value>(&map).expect("JSON")
        );
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(r.updated_ms, Some(1_700_000_000_123));
        assert_eq!(r.archived_ms, Some(1_700_000_000_000));
        let (r, _) = both(r#"{"id":7,"updatedAt":5}"#, &list, true);
        assert_eq!(r.json, r#"{"archived":true,"id":"7","updatedAt":5}"#);
        assert_eq!((r.id.as_deref(), r.updated_ms), (Some("7"), None));
    }
}
