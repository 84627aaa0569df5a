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
        if let Some(at) = lone_surrogate(record) {
            return Err(format!(
                "a \\u escape at byte {at} is a lone UTF-16 surrogate: not Unicode text \
                 (RFC 8259 §8.2), and Parquet readers refuse it"
            ));
        }
        let mut extra = Vec::new();
        let mut refusal = None;
        let mut de = serde_json::Deserializer::from_str(record);
        Fields {
            splitter: self,
            values,
            extra: &mut extra,
            refusal: &mut refusal,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| refusal.take().unwrap_or_else(|| reason(&e)))?;
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

/// Why a record that is not JSON (or not an object) was refused, without its content: parser
/// messages quote the offending value, which may be large or hold a secret in a form the
/// redaction step does not know (Rust's escaping of control characters).
fn reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "not valid JSON: it ends early".into(),
        Category::Syntax => format!("not valid JSON (at column {})", e.column()),
        Category::Data | Category::Io => "not a JSON object".into(),
    }
}

/// The byte offset of the first `\u` escape that is a UTF-16 surrogate not in a high + low
/// pair, in `json` (JSON text: a backslash outside a string is a syntax error caught later).
pub fn lone_surrogate(json: &str) -> Option<usize> {
    let b = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = std::str::from_utf8(b.get(at + 2..at + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut from = 0;
    while let Some(found) = memchr::memmem::find(&b[from..], b"\\u") {
        let at = from + found;
        // An escape only if an even number of backslashes precede this one.
        let preceding = b[..at].iter().rev().take_while(|&&c| c == b'\\').count();
        from = at + 2;
        if preceding % 2 == 1 {
            continue;
        }
        match unit(at) {
            Some(0xD800..=0xDBFF) => {
                let low = (b.get(at + 6..at + 8) == Some(b"\\u".as_slice()))
                    .then(|| unit(at + 6))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Some(at);
                }
                from = at + 12;
            }
            Some(0xDC00..=0xDFFF) => return Some(at),
            _ => {}
        }
    }
    None
}

/// One record's fields, assigned to their columns as they are parsed (no intermediate list).
struct Fields<'s, 'a> {
    splitter: &'s mut Splitter,
    values: &'s mut [Option<&'a str>],
    extra: &'s mut Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Set when the record is refused for a reason of ours (not a parse error).
    refusal: &'s mut Option<String>,
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
                let name: String = k.chars().take(64).collect();
                *self.refusal = Some(format!(
                    "field {name:?}: names starting with _sluice_ are reserved for the host's columns"
                ));
                return Err(serde::de::Error::custom("reserved field name"));
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
        assert!(
            split(r#"{"\u005fsluice_x":1}"#)
                .unwrap_err()
                .contains("reserved")
        );
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_and_escaped_backslashes_are_not() {
        for ok in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\uD83D\uDE00 x \u00e9"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\\\\ud800"}"#,
            r#"{"a":"\u0041"}"#,
        ] {
            assert_eq!(lone_surrogate(ok), None, "{ok}");
            assert!(split(ok).is_ok(), "{ok}");
        }
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"x\ud800\u0041"}"#,
            r#"{"a":"\ud800\ud800"}"#,
            r#"{"a":"\\\ud800"}"#,
            r#"{"a":{"b":["\uDFFF"]}}"#,
            r#"{"a":"\ud800"#,
        ] {
            assert!(lone_surrogate(bad).is_some(), "{bad}");
            assert!(split(bad).unwrap_err().contains("surrogate"), "{bad}");
        }
    }

    #[test]
    fn reasons_do_not_quote_the_record() {
        let secret = "Zq9\u{7f}SecretValue77";
        for bad in [
            format!("\"token={secret}\""),
            format!("[\"{secret}\"]"),
            format!("{{\"a\":\"{secret}\"}} x"),
            format!("{{\"a\":\"{secret}"),
            format!("{{\"a\":{secret}}}"),
        ] {
            let reason = split(&bad).unwrap_err();
            assert!(!reason.contains("SecretValue"), "{reason}");
            assert!(reason.len() < 100, "{reason}");
        }
        let reason = split(r#"{"_sluice_seq":1}"#).unwrap_err();
        assert!(
            reason.contains("\"_sluice_seq\""),
            "names the field: {reason}"
        );
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
