//! One emitted record, parsed once: its declared fields by column, the rest kept as text.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The largest record staging accepts, in bytes of JSON. Larger ones are refused at emit (the
/// plugin gets `invalid-record`); a row group holds a few of them at most.
pub const MAX_RECORD_BYTES: usize = 8 << 20;

/// A record split by the stream's columns.
#[derive(Debug)]
pub struct Split<'a> {
    /// The raw JSON text of each declared column's value, by column index (`None`: absent).
    pub values: Vec<Option<&'a str>>,
    /// `{"field": value, ...}` of the fields no column takes (undeclared, or a repeated
    /// name), each value byte for byte; `None` when there are none.
    pub extra: Option<String>,
}

/// Parses `record` (a JSON object) and splits it by `columns` (field name → column index).
///
/// # Errors
/// A one-line reason: too large, not a JSON object, or a field name starting with `_sluice_`
/// (reserved for the host's columns).
pub fn split<'a>(record: &'a str, columns: &HashMap<String, usize>) -> Result<Split<'a>, String> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record of {} bytes; at most {MAX_RECORD_BYTES} are accepted",
            record.len()
        ));
    }
    let fields = parse_object(record)?;
    let mut values = vec![None; columns.len()];
    let mut extra: Vec<(&Cow<'a, str>, &'a RawValue)> = Vec::new();
    for (k, v) in &fields {
        if k.starts_with("_sluice_") {
            return Err("field names starting with _sluice_ are reserved".into());
        }
        match columns.get(k.as_ref()) {
            Some(&i) if values[i].is_none() => values[i] = Some(v.get()),
            _ => extra.push((k, v)),
        }
    }
    let extra = if extra.is_empty() {
        None
    } else {
        let mut text = String::with_capacity(64);
        text.push('{');
        for (i, (k, v)) in extra.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(k.as_ref()).map_err(|e| e.to_string())?);
            text.push(':');
            text.push_str(v.get());
        }
        text.push('}');
        Some(text)
    };
    Ok(Split { values, extra })
}

/// The fields of a JSON object in their order, values unparsed.
fn parse_object(record: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, String> {
    struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Fields<'_>>(record)
        .map(|f| f.0)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> HashMap<String, usize> {
        [("id".to_string(), 0), ("name".to_string(), 1)].into()
    }

    #[test]
    fn declared_fields_by_column_and_the_rest_byte_for_byte() {
        let s = split(r#"{"name":"a","x":{"d":1.50},"id":7}"#, &columns()).unwrap();
        assert_eq!(s.values, vec![Some("7"), Some("\"a\"")]);
        assert_eq!(s.extra.as_deref(), Some(r#"{"x":{"d":1.50}}"#));
        let s = split(r#"{"id":1,"id":2}"#, &columns()).unwrap();
        assert_eq!(s.values, vec![Some("1"), None]);
        assert_eq!(
            s.extra.as_deref(),
            Some(r#"{"id":2}"#),
            "a repeated name is kept"
        );
        assert!(split("{}", &columns()).unwrap().extra.is_none());
    }

    #[test]
    fn what_is_refused() {
        assert!(split("[1]", &columns()).is_err());
        assert!(split(r#"{"_sluice_seq":1}"#, &columns()).is_err());
        assert!(split("{\"id\":1", &columns()).is_err());
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECORD_BYTES));
        assert!(split(&big, &columns()).unwrap_err().contains("at most"));
    }
}
