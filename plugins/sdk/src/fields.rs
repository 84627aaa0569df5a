//! An object's top-level fields with their values left as JSON text, for connectors that
//! reshape upstream items into records without building a tree of each one.
//!
//! Reading a page straight into `Vec<Fields>` costs one scan of the page (serde_json checks
//! each value and borrows it), where a `serde_json::Value` per item allocates a map, a string
//! per key and a node per value — in the guest, most of a sync's CPU (GitHub issues; Linear
//! nodes). Values keep their exact text (numbers are not rounded, escapes not rewritten).
//!
//! [`scan_objects`] goes further for a connector that passes values through unread: it finds
//! where each item's keys and values end without checking the values ([`Scanned`]), leaving the
//! check to the host, which parses every emitted record in full (GitHub issues: the guest's
//! CPU for a page fell from ~19 % to ~9 % of a sync's).
//!
//! ```
//! use sluice_sdk::fields::{Fields, RecordWriter};
//! let page = r#"[{"id":"a","n":1.50,"team":{"id":"t"}}]"#;
//! let items: Vec<Fields<'_>> = sluice_sdk::serde_json::from_str(page).unwrap();
//! let mut record = RecordWriter::with_capacity(64);
//! record.raw("id", items[0].get("id").unwrap().get());
//! record.raw("n", items[0].get("n").unwrap().get());
//! assert_eq!(record.finish(), r#"{"id":"a","n":1.50}"#);
//! ```

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of one JSON object, in the order they came, values as JSON text
/// borrowed from the input.
pub struct Fields<'a>(Vec<(Key<'a>, &'a RawValue)>);

/// An object key: borrowed from the input when it holds no escapes (so it can be written back
/// between quotes as it is), else unescaped.
pub struct Key<'a>(Cow<'a, str>);

impl Key<'_> {
    /// The key's text (unescaped).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields<'a>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(48));
                while let Some(entry) = m.next_entry::<Key<'a>, &'a RawValue>()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'a> Fields<'a> {
    /// The fields of one object given as JSON text.
    ///
    /// # Errors
    /// When `item` is not a JSON object.
    pub fn parse(item: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(item)
    }

    /// The value of `key` as JSON text; of a key given twice, the last (as `serde_json::Value`
    /// reads it).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.0 == key)
            .map(|(_, v)| *v)
    }

    /// A top-level string field (`None` when absent or null).
    ///
    /// # Errors
    /// When the value is neither a string nor null.
    pub fn str(&self, key: &str) -> serde_json::Result<Option<String>> {
        match self.get(key) {
            Some(v) => serde_json::from_str(v.get()),
            None => Ok(None),
        }
    }

    /// Every field, in the order they came (a key given twice comes twice).
    pub fn iter(&self) -> impl Iterator<Item = (&Key<'a>, &'a RawValue)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    /// Bytes of the fields' keys and values: a capacity for a record made of them.
    pub fn text_len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| k.0.len() + v.get().len() + 4)
            .sum()
    }
}

/// The top-level fields of one JSON object found by [`scan_objects`]: like [`Fields`], values
/// as JSON text borrowed from the input, but **not checked**: the scan finds where each value
/// ends (strings, nesting, scalars) and nothing more.
///
/// For connectors that pass values through to their records as they came: the host parses every
/// emitted record in full and refuses one that is not JSON (`invalid-record`), so the page
/// needs no second check in the guest. Reading a value (a cursor, a nested login) still checks
/// it, with serde_json.
pub struct Scanned<'a> {
    /// Each field: its key, the key as written (quotes included) and its value.
    fields: Vec<(Key<'a>, &'a str, &'a str)>,
    /// The text the fields were found in (an item's, or a whole page's).
    source: &'a str,
}

impl<'a> Scanned<'a> {
    /// The fields of one object given as JSON text (scanned as [`scan_objects`] scans).
    ///
    /// # Errors
    /// When `item` is not an object, as far as the scan sees.
    pub fn parse(item: &'a str) -> serde_json::Result<Self> {
        let mut scan = Scan {
            text: item,
            s: item.as_bytes(),
            i: 0,
        };
        scan.ws();
        let fields = scan.object()?;
        scan.ws();
        if scan.i != scan.s.len() {
            return Err(scan.error("trailing characters after the object"));
        }
        Ok(fields)
    }

    /// The value of `key` as JSON text; of a key given twice, the last.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _, _)| k.0 == key)
            .map(|(_, _, v)| *v)
    }

    /// A top-level string field (`None` when absent or null).
    ///
    /// # Errors
    /// When the value is neither a string nor null.
    pub fn str(&self, key: &str) -> serde_json::Result<Option<String>> {
        match self.get(key) {
            Some(v) => serde_json::from_str(v),
            None => Ok(None),
        }
    }

    /// Every field, in the order they came (a key given twice comes twice).
    pub fn iter(&self) -> impl Iterator<Item = (&Key<'a>, &'a str)> {
        self.fields.iter().map(|(k, _, v)| (k, *v))
    }

    /// Bytes of the fields' keys and values: a capacity for a record made of them.
    pub fn text_len(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, _, v)| k.0.len() + v.len() + 4)
            .sum()
    }
}

/// The objects of a JSON array (a listing page: `[{...}, ...]`), each as [`Scanned`] fields, in
/// one pass over the text that only finds where keys and values end. A page that is not an
/// array of objects, or ends early, is an error; what the pass does not look at (a value's own
/// syntax: escapes, numbers, control characters, `{]`) is checked by the host when the record
/// is emitted. Keys written with escapes are unescaped (with serde_json, which checks them).
///
/// # Errors
/// When `text` is not an array of objects, as far as the scan sees.
pub fn scan_objects(text: &str) -> serde_json::Result<Vec<Scanned<'_>>> {
    let mut scan = Scan {
        text,
        s: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    scan.ws();
    scan.expect(b'[')?;
    scan.ws();
    if scan.peek() == Some(b']') {
        scan.i += 1;
    } else {
        loop {
            scan.ws();
            out.push(scan.object()?);
            scan.ws();
            match scan.next()? {
                b',' => {}
                b']' => break,
                _ => return Err(scan.error("expected `,` or `]` after an item")),
            }
        }
    }
    scan.ws();
    if scan.i != scan.s.len() {
        return Err(scan.error("trailing characters after the array"));
    }
    Ok(out)
}

/// The position of [`scan_objects`] in its text.
struct Scan<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn error(&self, what: &str) -> serde_json::Error {
        <serde_json::Error as serde::de::Error>::custom(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> serde_json::Result<u8> {
        let b = self
            .peek()
            .ok_or_else(|| self.error("the text ends early"))?;
        self.i += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> serde_json::Result<()> {
        if self.next()? == want {
            return Ok(());
        }
        self.i -= 1;
        Err(self.error(&format!("expected `{}`", char::from(want))))
    }

    /// Past the string starting at the current `"`; whether it held a backslash. Eight bytes
    /// at a time while no `"` or `\\` is among them (wasm has 64-bit integers; a byte loop
    /// made this scan as slow as serde_json's checking parse).
    fn string(&mut self) -> serde_json::Result<bool> {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let mut escaped = false;
        let mut i = self.i + 1;
        loop {
            while let Some(Ok(chunk)) = self.s.get(i..i + 8).map(<[u8; 8]>::try_from) {
                let w = u64::from_le_bytes(chunk);
                let q = w ^ (LO * u64::from(b'"'));
                let b = w ^ (LO * u64::from(b'\\'));
                // The lowest set bit marks the first byte equal to `"` or `\\` exactly (the
                // borrows of the subtraction only disturb the bytes after it).
                let hit = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
                if hit != 0 {
                    i += (hit.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match self.s.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
                None => {
                    self.i = self.s.len();
                    return Err(self.error("a string does not end"));
                }
            }
        }
        self.i = i + 1;
        Ok(escaped)
    }

    /// Past the value starting here (after whitespace); its text.
    fn value(&mut self) -> serde_json::Result<&'a str> {
        let start = self.i;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return Err(self.error("an object or array does not end")),
                    }
                    self.i += 1;
                }
            }
            Some(_) => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    return Err(self.error("expected a value"));
                }
            }
            None => return Err(self.error("the text ends early")),
        }
        // Every stop is at an ASCII byte (or the end): a character boundary.
        self.text
            .get(start..self.i)
            .ok_or_else(|| self.error("a value is not text"))
    }

    /// The object starting here.
    fn object(&mut self) -> serde_json::Result<Scanned<'a>> {
        self.expect(b'{')?;
        let mut fields = Vec::with_capacity(48);
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Scanned {
                fields,
                source: self.text,
            });
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let start = self.i;
            let escaped = self.string()?;
            let key = if escaped {
                let quoted = self.text.get(start..self.i).unwrap_or_default();
                Key(Cow::Owned(serde_json::from_str::<String>(quoted)?))
            } else {
                Key(Cow::Borrowed(
                    self.text.get(start + 1..self.i - 1).unwrap_or_default(),
                ))
            };
            let key_end = self.i;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = self.value()?;
            fields.push((
                key,
                self.text.get(start..key_end).unwrap_or_default(),
                value,
            ));
            self.ws();
            match self.next()? {
                b',' => {}
                b'}' => {
                    return Ok(Scanned {
                        fields,
                        source: self.text,
                    });
                }
                _ => {
                    self.i -= 1;
                    return Err(self.error("expected `,` or `}` after a value"));
                }
            }
        }
    }
}

/// Builds one record's JSON object text field by field (keys escaped as JSON strings, values
/// given as JSON text and written as they are).
pub struct RecordWriter {
    out: String,
}

impl RecordWriter {
    /// An empty record with room for `bytes` of text.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut out = String::with_capacity(bytes + 2);
        out.push('{');
        Self { out }
    }

    /// Appends `"key":`.
    fn key(&mut self, key: &str, borrowed_plain: bool) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        write_key(&mut self.out, key, borrowed_plain);
        self.out.push(':');
    }

    /// Appends `key` with `value`, JSON text (from [`Fields::get`], or made by the caller).
    pub fn raw(&mut self, key: &str, value: &str) {
        self.key(key, is_plain(key));
        self.out.push_str(value);
    }

    /// Appends a field read by [`Fields::iter`] under its own key.
    pub fn field(&mut self, key: &Key<'_>, value: &RawValue) {
        self.key(key.as_str(), matches!(key.0, Cow::Borrowed(_)));
        self.out.push_str(value.get());
    }

    /// Appends a field read by [`Scanned::iter`] under its own key.
    pub fn scanned(&mut self, key: &Key<'_>, value: &str) {
        self.key(key.as_str(), matches!(key.0, Cow::Borrowed(_)));
        self.out.push_str(value);
    }

    /// Appends `key` with a string value (escaped), or null.
    pub fn str(&mut self, key: &str, value: Option<&str>) {
        let text = serde_json::Value::from(value).to_string();
        self.raw(key, &text);
    }

    /// The record's JSON text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Writes `key` as a JSON string: a key borrowed from the input had no escapes there, so it
/// goes back between quotes as it was; any other is escaped.
fn write_key(out: &mut String, key: &str, borrowed_plain: bool) {
    if borrowed_plain {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(key).to_string());
    }
}

/// Writes one record field by field into a batch of
/// [`Batcher::push_fields`](crate::records::Batcher::push_fields): the methods of
/// [`RecordWriter`], and [`FieldWriter::scanned_fields`]. The record's JSON text is never
/// written, here or in the host, which takes each key and value as given
/// (`records.emit-fields`) and checks them as it would the record's text.
pub struct FieldWriter<'b> {
    text: &'b mut String,
    spans: &'b mut Vec<u32>,
    fields: u32,
}

/// Where [`FieldWriter::scanned_fields`] starts copying anew rather than copy the text between
/// two fields it keeps along with them (what lies between spans is not read by the host).
const MAX_COPIED_GAP: usize = 64;

impl<'b> FieldWriter<'b> {
    pub(crate) fn new(text: &'b mut String, spans: &'b mut Vec<u32>) -> Self {
        Self {
            text,
            spans,
            fields: 0,
        }
    }

    /// Fields written so far.
    pub(crate) fn fields(&self) -> u32 {
        self.fields
    }

    fn at(&self) -> u32 {
        u32::try_from(self.text.len()).unwrap_or(u32::MAX)
    }

    fn pair(&mut self, key: &str, borrowed_plain: bool, value: &str) {
        let key_start = self.at();
        write_key(self.text, key, borrowed_plain);
        let key_end = self.at();
        self.text.push_str(value);
        let value_end = self.at();
        self.spans.extend([key_start, key_end, key_end, value_end]);
        self.fields += 1;
    }

    /// Appends `key` with `value`, JSON text (from [`Fields::get`], or made by the caller).
    pub fn raw(&mut self, key: &str, value: &str) {
        self.pair(key, is_plain(key), value);
    }

    /// Appends a field read by [`Fields::iter`] under its own key.
    pub fn field(&mut self, key: &Key<'_>, value: &RawValue) {
        self.pair(key.as_str(), matches!(key.0, Cow::Borrowed(_)), value.get());
    }

    /// Appends a field read by [`Scanned::iter`] under its own key.
    pub fn scanned(&mut self, key: &Key<'_>, value: &str) {
        self.pair(key.as_str(), matches!(key.0, Cow::Borrowed(_)), value);
    }

    /// Appends every field of `item` whose key `keep` accepts, in order, as `item`'s text
    /// has it: fields close together there are copied in one piece (what lies between them
    /// goes along and is not read), so a record made of most of an upstream item's fields
    /// costs a few copies, not two per field.
    pub fn scanned_fields(&mut self, item: &Scanned<'_>, mut keep: impl FnMut(&Key<'_>) -> bool) {
        let base = item.source.as_ptr() as usize;
        let offset = |s: &str| (s.as_ptr() as usize).saturating_sub(base);
        // The part of `item.source` copied next, and where in `text` it will start.
        let mut run: Option<(usize, usize)> = None;
        let mut run_at = self.text.len();
        for (key, raw, value) in &item.fields {
            if !keep(key) {
                continue;
            }
            let (key_start, value_start) = (offset(raw), offset(value));
            let (key_end, value_end) = (key_start + raw.len(), value_start + value.len());
            let start = match run {
                Some((start, end)) if key_start >= end && key_start - end <= MAX_COPIED_GAP => {
                    start
                }
                _ => {
                    self.copy(item.source, run);
                    run_at = self.text.len();
                    key_start
                }
            };
            run = Some((start, value_end));
            let at = |o: usize| u32::try_from(run_at + o - start).unwrap_or(u32::MAX);
            self.spans
                .extend([at(key_start), at(key_end), at(value_start), at(value_end)]);
            self.fields += 1;
        }
        self.copy(item.source, run);
    }

    fn copy(&mut self, source: &str, run: Option<(usize, usize)>) {
        if let Some((start, end)) = run {
            self.text
                .push_str(source.get(start..end).unwrap_or_default());
        }
    }

    /// Appends `key` with a string value (escaped), or null.
    pub fn str(&mut self, key: &str, value: Option<&str>) {
        let text = serde_json::Value::from(value).to_string();
        self.raw(key, &text);
    }
}

/// The JSON text of the record `write` writes with a [`FieldWriter`], `{k1:v1,k2:v2,...}`:
/// what [`Batcher::push_fields`](crate::records::Batcher::push_fields) sends field by field.
pub fn record_text(write: impl FnOnce(&mut FieldWriter<'_>)) -> String {
    let (mut text, mut spans) = (String::new(), Vec::new());
    write(&mut FieldWriter::new(&mut text, &mut spans));
    let mut out = String::with_capacity(text.len() + spans.len() + 2);
    out.push('{');
    for (i, piece) in spans.chunks_exact(2).enumerate() {
        out.push_str(match i {
            0 => "",
            _ if i % 2 == 1 => ":",
            _ => ",",
        });
        out.push_str(
            text.get(piece[0] as usize..piece[1] as usize)
                .unwrap_or_default(),
        );
    }
    out.push('}');
    out
}

/// Whether `key` can go between quotes as it is (nothing JSON must escape).
fn is_plain(key: &str) -> bool {
    key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanned_fields_are_copied_in_runs_and_make_the_same_record() {
        let page = r#"[{"url":"u","id":1,"t\u0069tle":"a \"q\"","skip_url":"s","n":null,"big_url":"LONGER THAN SIXTY-FOUR BYTES, SO THAT THE FIELD AFTER IT STARTS A NEW COPY","z":[1,{"k":2}]}]"#;
        let item = &scan_objects(page).unwrap()[0];
        let keep = |k: &Key<'_>| !k.as_str().ends_with("url");
        let (mut text, mut spans) = (String::new(), Vec::new());
        let mut w = FieldWriter::new(&mut text, &mut spans);
        w.scanned_fields(item, keep);
        w.str("extra", Some("x"));
        assert_eq!(w.fields(), 5);
        // `id` to `n` in one copy (the short dropped field rides along), `z` in another.
        assert!(text.contains(r#""skip_url":"s""#), "{text}");
        assert!(!text.contains("LONGER"), "{text}");
        let record = record_text(|w| {
            w.scanned_fields(item, keep);
            w.str("extra", Some("x"));
        });
        assert_eq!(
            record,
            r#"{"id":1,"t\u0069tle":"a \"q\"","n":null,"z":[1,{"k":2}],"extra":"x"}"#
        );
        let mut by_field = RecordWriter::with_capacity(64);
        for (k, v) in item.iter().filter(|(k, _)| keep(k)) {
            by_field.scanned(k, v);
        }
        by_field.str("extra", Some("x"));
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&record).unwrap(),
            serde_json::from_str(&by_field.finish()).unwrap(),
        );
        assert_eq!(a, b, "the record RecordWriter makes, value for value");
    }

    #[test]
    fn fields_keep_their_text_and_the_last_of_a_repeated_key_wins() {
        let f = Fields::parse(r#"{"a":1.50,"b":"x\u00e9","a":{"id":"z"},"c\"d":null}"#).unwrap();
        assert_eq!(f.get("a").unwrap().get(), r#"{"id":"z"}"#);
        assert_eq!(f.get("b").unwrap().get(), r#""x\u00e9""#);
        assert_eq!(f.str("b").unwrap().as_deref(), Some("xé"));
        assert!(f.str("a").is_err());
        assert_eq!(f.str("missing").unwrap(), None);
        assert_eq!(f.iter().count(), 4);
        let mut r = RecordWriter::with_capacity(f.text_len());
        for (k, v) in f.iter() {
            r.field(k, v);
        }
        r.str("note", Some("q\"uote"));
        r.str("none", None);
        r.raw("tab\there", "1");
        let text = r.finish();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["c\"d"], serde_json::Value::Null);
        assert_eq!(back["note"], "q\"uote");
        assert_eq!(back["tab\there"], 1);
        assert!(text.starts_with(r#"{"a":1.50,"b":"x\u00e9","a":{"id":"z"},"c\"d":null,"#));
    }

    /// The scan and serde_json (through [`Fields`]) read the same keys and value texts.
    fn same_as_serde(page: &str) {
        let scanned = scan_objects(page).unwrap_or_else(|e| panic!("{page}: {e}"));
        let parsed: Vec<Fields<'_>> = serde_json::from_str(page).expect("valid JSON");
        assert_eq!(scanned.len(), parsed.len(), "{page}");
        for (s, p) in scanned.iter().zip(&parsed) {
            let s: Vec<(&str, &str)> = s.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
            assert_eq!(s, p, "{page}");
        }
    }

    #[test]
    fn scanned_pages_read_as_serde_json_reads_them() {
        for page in [
            "[]",
            " [ ] ",
            "[{}]",
            "[ {} , { } ]",
            r#"[{"a":1}]"#,
            "[\n {\"a\" : -1.5e+3 ,\t\"b\":true,\"c\":null,\"d\":false}\r\n]",
            r#"[{"s":"x\"y\\","t":"\\","u":"\u00e9\ud83d\ude00","e":""}]"#,
            r#"[{"o":{"a":[1,{"b":"]}\"[{"}],"c":{}},"l":[[],[[]],{"x":[]}]},{"o":[]}]"#,
            r#"[{"k\u0065y":1,"q\"k":2,"a":1,"a":2}]"#,
            r#"[{"url":"https://api.github.com/repos/o/r/issues/1","user":{"login":"octo","id":1},"labels":[{"name":"bug, \"quoted\""}],"body":"line\nline\t{[\"]}"}]"#,
        ] {
            same_as_serde(page);
        }
        let scanned = scan_objects(r#"[{"k\u0065y":1,"a":1,"a":{"z":2}}]"#).unwrap();
        assert_eq!(
            scanned[0].get("key"),
            Some("1"),
            "escaped keys are unescaped"
        );
        assert_eq!(
            scanned[0].get("a"),
            Some(r#"{"z":2}"#),
            "the last of a repeated key"
        );
        assert_eq!(scanned[0].str("missing").unwrap(), None);
        let mut r = RecordWriter::with_capacity(scanned[0].text_len());
        for (k, v) in scanned[0].iter() {
            r.scanned(k, v);
        }
        assert_eq!(r.finish(), r#"{"key":1,"a":1,"a":{"z":2}}"#);
    }

    #[test]
    fn generated_pages_read_as_serde_json_reads_them() {
        // A small deterministic generator of nested values with awkward strings.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn value(next: &mut impl FnMut() -> u64, depth: u32) -> String {
            let strings = [
                "\"\"",
                "\"a\"",
                "\"\\\"\"",
                "\"\\\\\"",
                "\"}]{[,:\"",
                "\"\\u0041\\n\"",
                "\"é😀\"",
            ];
            match next() % if depth > 3 { 4 } else { 6 } {
                0 => strings[(next() % strings.len() as u64) as usize].to_string(),
                1 => ["0", "-12", "1.5e-7", "18446744073709551616"][(next() % 4) as usize]
                    .to_string(),
                2 => ["true", "false", "null"][(next() % 3) as usize].to_string(),
                3 => "\"text with spaces, and: punctuation\"".to_string(),
                4 => {
                    let n = next() % 4;
                    let items: Vec<String> = (0..n).map(|_| value(next, depth + 1)).collect();
                    format!(
                        "[{}]",
                        items.join(if next().is_multiple_of(2) { "," } else { " , " })
                    )
                }
                _ => object(next, depth + 1),
            }
        }
        fn object(next: &mut impl FnMut() -> u64, depth: u32) -> String {
            let n = next() % 5;
            let fields: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "\"k{i}\"{}{}",
                        if next().is_multiple_of(2) { ":" } else { " : " },
                        value(next, depth)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        for _ in 0..500 {
            let n = next() % 4;
            let items: Vec<String> = (0..n).map(|_| object(&mut next, 0)).collect();
            same_as_serde(&format!("[{}]", items.join(",\n")));
        }
    }

    #[test]
    fn what_the_scan_refuses() {
        for bad in [
            "",
            "{}",
            "[1]",
            "[\"a\"]",
            "[{}",
            "[{},]",
            "[{}] x",
            r#"[{"a"}]"#,
            r#"[{"a":}]"#,
            r#"[{"a":1,}]"#,
            r#"[{"a":1 "b":2}]"#,
            r#"[{"a":"x}]"#,
            r#"[{"a":{"b":[1,2}]"#,
            r#"[{a:1}]"#,
            r#"[{"\uZZZZ":1}]"#,
        ] {
            assert!(scan_objects(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_record_is_an_empty_object() {
        assert_eq!(RecordWriter::with_capacity(0).finish(), "{}");
    }
}
