//! One emitted record, parsed once: its declared fields by column, the rest kept as text.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::json;

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
    /// Scratch space of the JSON check (the arrays and objects open in a value).
    stack: Vec<u8>,
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
            stack: Vec::new(),
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
            return Err(too_large(record.len()));
        }
        if let Some(at) = lone_surrogate(record) {
            return Err(surrogate(at));
        }
        let b = record.as_bytes();
        let syntax = |at: usize| {
            if at >= b.len() {
                "not valid JSON: it ends early".to_string()
            } else {
                format!("not valid JSON (at column {})", at + 1)
            }
        };
        let text = |from: usize, to: usize| record.get(from..to).ok_or_else(|| syntax(from));
        let mut i = json::ws(b, 0);
        match b.get(i) {
            Some(b'{') => {}
            Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                return Err("not a JSON object".into());
            }
            _ => return Err(syntax(i)),
        }
        let mut extra = String::new();
        i = json::ws(b, i + 1);
        let mut position = 0;
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (key_end, escaped) = json::string_end_escaped(b, i).map_err(syntax)?;
                let key = text(i, key_end)?;
                let key_at = i;
                i = json::ws(b, key_end);
                if b.get(i) != Some(&b':') {
                    return Err(syntax(i));
                }
                i = json::ws(b, i + 1);
                let value_end = json::value_end(b, i, &mut self.stack).map_err(syntax)?;
                let value = text(i, value_end)?;
                self.place(position, key, escaped, value, values, &mut extra)
                    .map_err(|e| e.unwrap_or_else(|| syntax(key_at)))?;
                position += 1;
                i = json::ws(b, value_end);
                match b.get(i) {
                    Some(b',') => i = json::ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(syntax(i)),
                }
            }
        }
        let end = json::ws(b, i);
        if end != b.len() {
            return Err(syntax(end));
        }
        Ok(finish(extra))
    }

    /// [`Splitter::split`] of the record `{k1:v1,k2:v2,...}` made of fields as
    /// `records.emit-fields` gives them, without that text being written: `spans` holds where
    /// each key, then its value, starts and ends in `text` (four per field), none before
    /// `*end` (where the batch's previous span ended; moved past this record's). Returns what
    /// `split` returns, and the byte length of the record's text. A key or value that is not
    /// exactly one JSON string or value (whitespace around it aside) refuses the record, and
    /// so does anything `split` refuses.
    ///
    /// # Errors
    /// As [`Splitter::split`], and [`FIELD_SPANS_WRONG`] when a span starts before the one
    /// before it ends, or lies past `text` or inside a character.
    pub fn split_fields<'a>(
        &mut self,
        text: &'a str,
        spans: &[u32],
        end: &mut usize,
        values: &mut [Option<&'a str>],
    ) -> Result<(Option<String>, usize), String> {
        let n = spans.len() / 4;
        let mut pieces: usize = 0;
        let mut last = *end;
        for pair in spans.chunks_exact(2) {
            let (from, to) = (pair[0] as usize, pair[1] as usize);
            if from < last || to < from || to > text.len() {
                return Err(FIELD_SPANS_WRONG.into());
            }
            pieces += to - from;
            last = to;
        }
        // `{`, each field's key, `:` and value, a `,` between two fields, `}`.
        let len = pieces + n + n.saturating_sub(1) + 2;
        if len > MAX_RECORD_BYTES {
            return Err(too_large(len));
        }
        // A lone surrogate in what lies between the spans is not the record's: the region is
        // looked at once, and only a hit is looked for again span by span.
        let region = text.get(*end..last).ok_or(FIELD_SPANS_WRONG)?;
        if lone_surrogate(region).is_some() {
            let mut at = 0;
            for pair in spans.chunks_exact(2) {
                let piece = text
                    .get(pair[0] as usize..pair[1] as usize)
                    .ok_or(FIELD_SPANS_WRONG)?;
                if let Some(found) = lone_surrogate(piece) {
                    return Err(surrogate(at + found));
                }
                at += piece.len() + 1;
            }
        }
        let mut extra = String::new();
        for (position, span) in spans.chunks_exact(4).enumerate() {
            let piece = |from: u32, to: u32| {
                text.get(from as usize..to as usize)
                    .ok_or(FIELD_SPANS_WRONG)
            };
            let (key, value) = (piece(span[0], span[1])?, piece(span[2], span[3])?);
            let bad = |what: &str| format!("not valid JSON: the {what} of field {position}");
            let mut escaped = false;
            let key = one(key, |b, i| {
                json::string_end_escaped(b, i).map(|(end, e)| {
                    escaped = e;
                    end
                })
            })
            .ok_or_else(|| bad("key"))?;
            let stack = &mut self.stack;
            let value =
                one(value, |b, i| json::value_end(b, i, stack)).ok_or_else(|| bad("value"))?;
            self.place(position, key, escaped, value, values, &mut extra)
                .map_err(|e| e.unwrap_or_else(|| bad("key")))?;
        }
        *end = last;
        Ok((finish(extra), len))
    }

    /// Puts the field at `position` (`key` a checked JSON string, with escapes when
    /// `escaped`; `value` checked JSON text) in its column, or in `extra` (the
    /// `_sluice_extra` object being written).
    ///
    /// # Errors
    /// The reason for a reserved name; `None` for a key whose escapes do not decode.
    fn place<'a>(
        &mut self,
        position: usize,
        key: &'a str,
        escaped: bool,
        value: &'a str,
        values: &mut [Option<&'a str>],
        extra: &mut String,
    ) -> Result<(), Option<String>> {
        let inner = key.get(1..key.len().saturating_sub(1)).ok_or(None)?;
        let name: Cow<'a, str> = if escaped {
            Cow::Owned(serde_json::from_str::<String>(key).map_err(|_| None)?)
        } else {
            Cow::Borrowed(inner)
        };
        if name.starts_with("_sluice_") {
            let name: String = name.chars().take(64).collect();
            return Err(Some(format!(
                "field {name:?}: names starting with _sluice_ are reserved for the host's columns"
            )));
        }
        match self.column(position, &name) {
            Some(c) if values[c].is_none() => values[c] = Some(value),
            _ => {
                extra.push(if extra.is_empty() { '{' } else { ',' });
                match name {
                    // A key without escapes is written between quotes as serde_json writes
                    // it (a checked string holds no `"`, backslash or control character).
                    Cow::Borrowed(_) => extra.push_str(key),
                    Cow::Owned(k) => extra.push_str(&serde_json::Value::from(k).to_string()),
                }
                extra.push(':');
                extra.push_str(value);
            }
        }
        Ok(())
    }

    /// The column of the field `key` at `position`, if one is declared.
    fn column(&mut self, position: usize, key: &str) -> Option<usize> {
        if let Some(Some(c)) = self.order.get(position)
            && same(&self.names[*c], key)
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

/// Why a field batch whose spans do not cut its text into keys and values is refused.
pub const FIELD_SPANS_WRONG: &str = "the batch's spans do not cut its text into keys and values (four per field, each at or after the one before, within the text)";

/// `piece` with the whitespace around it (JSON's) taken off, when what is left is exactly one
/// item `end` finds (a string, a value): `end` gives where the item starting at a byte ends.
fn one(piece: &str, end: impl FnOnce(&[u8], usize) -> Result<usize, usize>) -> Option<&str> {
    let b = piece.as_bytes();
    let from = json::ws(b, 0);
    let to = end(b, from).ok()?;
    (json::ws(b, to) == b.len())
        .then(|| piece.get(from..to))
        .flatten()
}

fn too_large(len: usize) -> String {
    format!("record of {len} bytes; at most {MAX_RECORD_BYTES} are accepted")
}

fn surrogate(at: usize) -> String {
    format!(
        "a \\u escape at byte {at} is a lone UTF-16 surrogate: not Unicode text \
         (RFC 8259 §8.2), and Parquet readers refuse it"
    )
}

/// The `_sluice_extra` text being written, closed (`None` when no field went there).
fn finish(mut extra: String) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    extra.push('}');
    Some(extra)
}

/// `a == b`, compared here: names are short, and a call to `memcmp` per field cost more than
/// the comparison (2.7 % of a GitHub sync's samples were `memcmp`).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Positions of fields remembered per stream (a record with more fields is matched by name
/// past this many).
const MAX_REMEMBERED_FIELDS: usize = 4096;

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

    /// `text` and `spans` of a record given as (key, value) pieces (with `, ` and `: `
    /// between them, which are not read), and the record's JSON text.
    fn pieces(fields: &[(&str, &str)]) -> (String, Vec<u32>, String) {
        let (mut text, mut spans) = (String::from("{ "), Vec::new());
        for (k, v) in fields {
            for (piece, after) in [(k, ": "), (v, ", ")] {
                spans.push(text.len() as u32);
                text.push_str(piece);
                spans.push(text.len() as u32);
                text.push_str(after);
            }
        }
        let joined: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        (text, spans, format!("{{{}}}", joined.join(",")))
    }

    #[test]
    fn fields_given_one_by_one_split_as_their_record_does() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[
                (r#""id""#, "7"),
                (r#""name""#, r#""a""#),
                (r#""x""#, r#"{"d":1.50}"#),
            ],
            &[
                (r#""id""#, "1"),
                (r#""id""#, "2"),
                (r#""w\"e\u0069rd""#, "[1, {\"a\": null}]"),
            ],
            &[
                (r#""\u0069d""#, r#""s""#),
                (r#""name""#, "null"),
                (r#""z""#, "-0.5e-3"),
            ],
            &[(r#" "id" "#, " 3 "), (r#""name""#, "\t\"t\"\n")],
            // Refused both ways.
            &[(r#""id""#, "01")],
            &[(r#""id""#, "[1,]")],
            &[(r#""id""#, "")],
            &[("id", "1")],
            &[(r#""_sluice_seq""#, "1")],
            &[(r#""\u005fsluice_x""#, "1")],
            &[(r#""id""#, r#""\ud800""#)],
            &[(r#""id""#, "\"a\u{1}\"")],
            &[(r#""id""#, r#""\x""#)],
        ];
        for fields in cases {
            let (text, spans, record) = pieces(fields);
            let mut s = Splitter::new(vec!["id".into(), "name".into()]);
            let mut by_text = vec![None; 2];
            let want = s.split(&record, &mut by_text);
            let mut s = Splitter::new(vec!["id".into(), "name".into()]);
            let mut by_fields = vec![None; 2];
            let got = s.split_fields(&text, &spans, &mut 0, &mut by_fields);
            match (want, got) {
                (Ok(extra), Ok((extra2, len))) => {
                    assert_eq!(extra, extra2, "{record}");
                    assert_eq!(by_text, by_fields, "{record}");
                    assert_eq!(len, record.len(), "{record}");
                }
                (Err(_), Err(_)) => {}
                (want, got) => panic!("{record}: {want:?} / {got:?}"),
            }
        }
        // Stricter than the text: a piece must be one key or one value, even where the text
        // they make would read as more fields.
        let (text, spans, record) = pieces(&[(r#""id":1,"name""#, r#""a""#)]);
        let mut s = Splitter::new(vec!["id".into(), "name".into()]);
        assert!(s.split(&record, &mut [None, None]).is_ok());
        let reason = s
            .split_fields(&text, &spans, &mut 0, &mut [None, None])
            .unwrap_err();
        assert!(reason.contains("the key of field 0"), "{reason}");
        // A lone surrogate between the spans is not the record's.
        let text = r#""id" "\ud800" 1"#;
        let mut s = Splitter::new(vec!["id".into()]);
        let mut row = [None];
        assert!(
            s.split_fields(text, &[0, 4, 14, 15], &mut 0, &mut row)
                .is_ok()
        );
        assert_eq!(row, [Some("1")]);
        // Spans that do not cut the text: backwards, before the batch's last one, past the
        // text, inside a character.
        let text = "\"é\":1";
        for (spans, end) in [
            (vec![0u32, 4, 3, 6], 0),
            (vec![0, 4, 5, 6], 1),
            (vec![0, 4, 5, 99], 0),
            (vec![0, 2, 5, 6], 0),
        ] {
            let mut s = Splitter::new(vec!["id".into()]);
            let reason = s
                .split_fields(text, &spans, &mut { end }, &mut [None])
                .unwrap_err();
            assert_eq!(reason, FIELD_SPANS_WRONG, "{spans:?}");
        }
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
