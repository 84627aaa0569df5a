//! One emitted record, parsed once: its declared fields by column, the rest kept as text.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The largest record staging accepts, in bytes of JSON. Larger ones are refused at emit (the
/// plugin gets `invalid-record`); a row group holds a few of them at most.
pub const MAX_RECORD_BYTES: usize = 8 << 20;

/// Splits a stream's records by its columns, remembering at which position of the last record
/// each field was: emitted records of one stream nearly always list their fields in the same
/// order, so a field is matched by one string comparison and the name index is consulted only
/// when the order changes.
#[derive(Debug)]
pub struct Splitter {
    names: Vec<String>,
    /// Column index by field name.
    index: HashMap<String, usize>,
    /// The column the field at each position of the previous record went to.
    order: Vec<Option<usize>>,
}

impl Splitter {
    /// A splitter for the columns `names` (column index = position).
    pub fn new(names: Vec<String>) -> Self {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self {
            names,
            index,
            order: Vec::new(),
        }
    }

    /// The number of columns.
    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// Parses `record` (a JSON object) into `values` (by column index, raw JSON text of each
    /// declared field; `values.len()` must be [`Splitter::width`], all `None` on entry) and
    /// returns `{"field": value, ...}` of the fields no column takes (undeclared, or a repeated
    /// name), each value byte for byte, or `None` when there are none.
    ///
    /// # Errors
    /// A one-line reason: too large, not a JSON object, or a field name starting with
    /// `_sluice_` (reserved for the host's columns).
    pub fn split<'a>(
        &mut self,
        record: &'a str,
        values: &mut [Option<&'a str>],
    ) -> Result<Option<String>, String> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "record of {} bytes; at most {MAX_RECORD_BYTES} are accepted",
                record.len()
            ));
        }
        let mut extra = Vec::new();
        let mut de = serde_json::Deserializer::from_str(record);
        Fields {
            splitter: self,
            values,
            extra: &mut extra,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())?;
        if extra.is_empty() {
            return Ok(None);
        }
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
        Ok(Some(text))
    }

    /// The column of the field `key` at `position`, if one is declared.
    fn column(&mut self, position: usize, key: &str) -> Option<usize> {
        if let Some(Some(c)) = self.order.get(position)
            && self.names[*c] == key
        {
            return Some(*c);
        }
        let c = self.index.get(key).copied();
        if position < self.order.len() {
            self.order[position] = c;
        } else if position == self.order.len() && position < MAX_REMEMBERED_FIELDS {
            self.order.push(c);
        }
        c
    }
}

/// Positions of fields remembered per stream (a record with more fields is matched by name
/// past this many).
const MAX_REMEMBERED_FIELDS: usize = 4096;

/// One record's fields, assigned to their columns as they are parsed (no intermediate list).
struct Fields<'s, 'a> {
    splitter: &'s mut Splitter,
    values: &'s mut [Option<&'a str>],
    extra: &'s mut Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some((k, v)) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
            if k.starts_with("_sluice_") {
                return Err(serde::de::Error::custom(
                    "field names starting with _sluice_ are reserved",
                ));
            }
            match self.splitter.column(position, &k) {
                Some(i) if self.values[i].is_none() => self.values[i] = Some(v.get()),
                _ => self.extra.push((k, v)),
            }
            position += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(record: &str) -> Result<(Vec<Option<&str>>, Option<String>), String> {
        let mut s = Splitter::new(vec!["id".into(), "name".into()]);
        let mut values = vec![None; 2];
        let extra = s.split(record, &mut values)?;
        Ok((values, extra))
    }

    #[test]
    fn declared_fields_by_column_and_the_rest_byte_for_byte() {
        let (values, extra) = split(r#"{"name":"a","x":{"d":1.50},"id":7}"#).unwrap();
        assert_eq!(values, vec![Some("7"), Some("\"a\"")]);
        assert_eq!(extra.as_deref(), Some(r#"{"x":{"d":1.50}}"#));
        let (values, extra) = split(r#"{"id":1,"id":2}"#).unwrap();
        assert_eq!(values, vec![Some("1"), None]);
        assert_eq!(
            extra.as_deref(),
            Some(r#"{"id":2}"#),
            "a repeated name is kept"
        );
        assert!(split("{}").unwrap().1.is_none());
    }

    #[test]
    fn fields_in_another_order_than_the_last_record_still_find_their_columns() {
        let mut s = Splitter::new(vec!["id".into(), "name".into(), "at".into()]);
        let records = [
            r#"{"id":1,"name":"a","at":"t"}"#,
            r#"{"name":"b","id":2,"x":0,"at":"u"}"#,
            r#"{"at":"v","x":1,"id":3}"#,
            r#"{"id":4,"id":5,"name":"c"}"#,
            r#"{"id":6,"name":"d","at":"w"}"#,
        ];
        let mut got = Vec::new();
        for r in records {
            let mut values = vec![None; 3];
            let extra = s.split(r, &mut values).unwrap();
            got.push((values, extra));
        }
        assert_eq!(got[0].0, vec![Some("1"), Some("\"a\""), Some("\"t\"")]);
        assert_eq!(got[1].0, vec![Some("2"), Some("\"b\""), Some("\"u\"")]);
        assert_eq!(got[1].1.as_deref(), Some(r#"{"x":0}"#));
        assert_eq!(got[2].0, vec![Some("3"), None, Some("\"v\"")]);
        assert_eq!(got[3].0, vec![Some("4"), Some("\"c\""), None]);
        assert_eq!(got[3].1.as_deref(), Some(r#"{"id":5}"#));
        assert_eq!(got[4].0, vec![Some("6"), Some("\"d\""), Some("\"w\"")]);
        assert!(got[4].1.is_none());
    }

    #[test]
    fn escaped_names_are_read_as_their_text() {
        let (values, extra) = split(r#"{"\u0069d":1,"n\u0061me":"a"}"#).unwrap();
        assert_eq!(values, vec![Some("1"), Some("\"a\"")]);
        assert!(extra.is_none());
        let (_, extra) = split(r#"{"id":1,"x\"y":2}"#).unwrap();
        assert_eq!(extra.as_deref(), Some(r#"{"x\"y":2}"#));
        assert!(split(r#"{"\u005fsluice_x":1}"#).unwrap_err().contains("reserved"));
    }

    #[test]
    fn what_is_refused() {
        assert!(split("[1]").is_err());
        assert!(
            split(r#"{"_sluice_seq":1}"#)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(split("{\"id\":1").is_err());
        assert!(split("{\"id\":1} x").is_err(), "trailing text");
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECORD_BYTES));
        assert!(split(&big).unwrap_err().contains("at most"));
    }
}
