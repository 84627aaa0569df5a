//! Message pages rewritten record by record as `serde_json` writes the `Value` it parses them to,
//! without building that tree.
//!
//! The connector used to parse every history page into a `serde_json::Value` and write each
//! message back out with `channel_id` and `created_at` added: most of a sync's CPU in the guest
//! went to allocating and freeing that tree. [`Canon`] reads the page's text once and writes
//! each message straight into its record's text, byte for byte what the tree gave:
//! - objects' keys sorted (byte order of the unescaped key, as `BTreeMap<String, _>` orders
//!   them), a key given twice kept once with its last value;
//! - no whitespace between tokens;
//! - strings unescaped and escaped again as serde_json escapes them (`\"`, `\\`, `\b`, `\f`,
//!   `\n`, `\r`, `\t`, other control characters as `\u00XX`; everything else, `/` and
//!   non-ASCII included, as itself);
//! - numbers as serde_json's `arbitrary_precision` keeps them: their text, but an exponent is
//!   written `e`, with its sign (`1E5` → `1e+5`);
//! - and what the tree refused (a control character in a string, a bad escape or number,
//!   nesting past serde_json's 128 levels) is an error here too.
//!
//! The page around the messages (`ok`, `response_metadata`, …) is read with
//! [`sluice_sdk::fields::Scanned`], which does not check the values it does not read.

use sluice_sdk::serde_json;
use sluice_sdk::{ConnectorError, Result};

/// Levels of nesting serde_json reads (its recursion limit: a 128th level is an error). The
/// items of a page's array are at level 3 (the page is an object, the array in it level 2).
const MAX_LEVEL: usize = 127;
const ITEM_LEVEL: usize = 3;

/// Reusable buffers of the rewriting: the fields of the objects being written (innermost
/// last) and the text of an object whose fields are being put in order.
#[derive(Default)]
pub struct Canon {
    fields: Vec<Field>,
    scratch: String,
}

/// One field written into a record's text: `"key":value` at `start..end`, its key's quoted
/// text ending at `key_end`.
struct Field {
    start: usize,
    key_end: usize,
    end: usize,
    /// The key, unescaped, when its written text has escapes (else it is the text between the
    /// quotes).
    key: Option<Box<str>>,
}

impl Field {
    /// The unescaped key, `text` being what holds the field (at its offsets minus `shift`).
    fn key<'t>(&'t self, text: &'t str, shift: usize) -> &'t str {
        match &self.key {
            Some(k) => k,
            None => &text[self.start - shift + 1..self.key_end - shift - 1],
        }
    }
}

/// One message (an object of the page's array) being written: its fields are in
/// [`Object::text`]'s order until [`Object::finish`] puts them in order.
pub struct Object<'c> {
    canon: &'c mut Canon,
    out: String,
}

impl Object<'_> {
    /// The JSON text (as written) of the top-level field `key`; of a key given twice, the last.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.canon
            .fields
            .iter()
            .rev()
            .find(|f| f.key(&self.out, 0) == key)
            .map(|f| &self.out[f.key_end + 1..f.end])
    }

    /// A top-level string field, unescaped (`None` when absent or not a string, as
    /// `Value::as_str` reads it).
    pub fn str(&self, key: &str) -> Option<String> {
        let text = self.get(key)?;
        if !text.starts_with('"') {
            return None;
        }
        if text.contains('\\') {
            serde_json::from_str(text).ok()
        } else {
            Some(text[1..text.len() - 1].to_string())
        }
    }

    /// A top-level field that is a non-negative integer (as `Value::as_u64` reads it: the
    /// number's text parsed as `u64`).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The string field `inner` of the top-level object field `key` (`edited.ts`).
    pub fn inner_str(&self, key: &str, inner: &str) -> Option<String> {
        let text = self.get(key)?;
        if !text.starts_with('{') {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        value.get(inner)?.as_str().map(str::to_string)
    }

    /// Adds (or, being later, replaces) the field `key` with `value`, JSON text as serde_json
    /// writes it.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.canon.field_start(&mut self.out);
        let start = self.out.len();
        let escaped = write_key(&mut self.out, key);
        let key_end = self.out.len();
        self.out.push(':');
        self.out.push_str(value);
        self.canon.fields.push(Field {
            start,
            key_end,
            end: self.out.len(),
            key: escaped.then(|| key.into()),
        });
    }

    /// The record's text.
    pub fn finish(mut self) -> String {
        self.canon.close(&mut self.out, 0);
        self.out
    }
}

impl Canon {
    /// Writes each object of the JSON array `text` (a page's `messages`) and hands it to
    /// `each`; `subject` names the page in errors (`conversations.history`). Returns how many
    /// items were not objects (read, then skipped: a message without a `ts` string, as the tree
    /// of one was).
    ///
    /// # Errors
    /// When `text` is not an array or does not parse as serde_json parses it (an `internal`
    /// error: an unexpected answer), or what `each` returns.
    pub fn objects(
        &mut self,
        text: &str,
        subject: &str,
        mut each: impl FnMut(Object<'_>) -> Result<()>,
    ) -> Result<u64> {
        let bad = |e: serde_json::Error| {
            ConnectorError::internal(format!(
                "the upstream's answer to {subject} is not the JSON expected: {e}"
            ))
        };
        let mut r = Reader {
            text,
            s: text.as_bytes(),
            i: 0,
        };
        let mut skipped = 0;
        r.ws();
        r.expect(b'[').map_err(bad)?;
        r.ws();
        if r.peek() == Some(b']') {
            r.i += 1;
        } else {
            loop {
                r.ws();
                if r.peek() != Some(b'{') {
                    let mut out = std::mem::take(&mut self.scratch);
                    out.clear();
                    let read = self.value(&mut r, &mut out, ITEM_LEVEL);
                    self.scratch = out;
                    read.map_err(bad)?;
                    skipped += 1;
                    r.ws();
                    match r.next().map_err(bad)? {
                        b',' => continue,
                        b']' => break,
                        _ => return Err(bad(r.error("expected `,` or `]` after an item"))),
                    }
                }
                self.fields.clear();
                let mut out = String::with_capacity(256);
                self.open(&mut r, &mut out, ITEM_LEVEL).map_err(bad)?;
                each(Object {
                    canon: &mut *self,
                    out,
                })?;
                r.ws();
                match r.next().map_err(bad)? {
                    b',' => {}
                    b']' => break,
                    _ => return Err(bad(r.error("expected `,` or `]` after an item"))),
                }
            }
        }
        r.ws();
        if r.i != r.s.len() {
            return Err(bad(r.error("trailing characters after the array")));
        }
        Ok(skipped)
    }

    /// Writes the value at the reader (after whitespace) at nesting `level` (an object or
    /// array there is at that level).
    fn value(&mut self, r: &mut Reader<'_>, out: &mut String, level: usize) -> Rj<()> {
        match r.peek() {
            Some(b'"') => r.string(out).map(|_| ()),
            Some(b'{') => {
                let base = self.fields.len();
                self.open(r, out, level)?;
                self.close(out, base);
                Ok(())
            }
            Some(b'[') => {
                if level > MAX_LEVEL {
                    return Err(r.error("recursion limit exceeded"));
                }
                r.i += 1;
                out.push('[');
                r.ws();
                if r.peek() == Some(b']') {
                    r.i += 1;
                } else {
                    loop {
                        r.ws();
                        self.value(r, out, level + 1)?;
                        r.ws();
                        match r.next()? {
                            b',' => out.push(','),
                            b']' => break,
                            _ => {
                                r.i -= 1;
                                return Err(r.error("expected `,` or `]` after a value"));
                            }
                        }
                    }
                }
                out.push(']');
                Ok(())
            }
            Some(_) => r.scalar(out),
            None => Err(r.error("the text ends early")),
        }
    }

    /// Writes `{` and the fields of the object at the reader, in their order, recording them
    /// in `self.fields`; the caller closes it ([`Canon::close`]).
    fn open(&mut self, r: &mut Reader<'_>, out: &mut String, level: usize) -> Rj<()> {
        if level > MAX_LEVEL {
            return Err(r.error("recursion limit exceeded"));
        }
        r.expect(b'{')?;
        out.push('{');
        r.ws();
        if r.peek() == Some(b'}') {
            r.i += 1;
            return Ok(());
        }
        let base = self.fields.len();
        loop {
            r.ws();
            if r.peek() != Some(b'"') {
                return Err(r.error("expected a key"));
            }
            if self.fields.len() > base {
                out.push(',');
            }
            let start = out.len();
            let key = r.string(out)?;
            let key_end = out.len();
            r.ws();
            r.expect(b':')?;
            out.push(':');
            r.ws();
            self.value(r, out, level + 1)?;
            self.fields.push(Field {
                start,
                key_end,
                end: out.len(),
                key: key.map(String::into_boxed_str),
            });
            r.ws();
            match r.next()? {
                b',' => {}
                b'}' => return Ok(()),
                _ => {
                    r.i -= 1;
                    return Err(r.error("expected `,` or `}` after a value"));
                }
            }
        }
    }

    /// A `,` before a field added to the object whose fields are `self.fields` (all of them
    /// its own: the top-level object of [`Object`]).
    fn field_start(&self, out: &mut String) {
        if !self.fields.is_empty() {
            out.push(',');
        }
    }

    /// Closes the object whose fields are `self.fields[base..]`: when their keys are not
    /// strictly ascending, puts them in key order (the last of a repeated key kept), then `}`.
    fn close(&mut self, out: &mut String, base: usize) {
        let fields = &mut self.fields[base..];
        let ordered = {
            let text = out.as_str();
            fields
                .windows(2)
                .all(|w| w[0].key(text, 0) < w[1].key(text, 0))
        };
        if !ordered {
            let shift = fields[0].start;
            self.scratch.clear();
            self.scratch.push_str(&out[shift..]);
            out.truncate(shift);
            let text = self.scratch.as_str();
            // Stable: of a repeated key, the later field stays later.
            fields.sort_by(|a, b| a.key(text, shift).cmp(b.key(text, shift)));
            let mut first = true;
            for (k, f) in fields.iter().enumerate() {
                if fields
                    .get(k + 1)
                    .is_some_and(|next| next.key(text, shift) == f.key(text, shift))
                {
                    continue; // a later value of the same key replaces this one
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&text[f.start - shift..f.end - shift]);
            }
        }
        out.push('}');
        self.fields.truncate(base);
    }
}

type Rj<T> = core::result::Result<T, serde_json::Error>;

/// Writes `key` as a JSON string as serde_json escapes it; whether that needed escapes.
fn write_key(out: &mut String, key: &str) -> bool {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
        false
    } else {
        escape_into(out, key);
        true
    }
}

/// `s` as a JSON string, escaped as serde_json's writer escapes it.
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// The position in the text being rewritten.
struct Reader<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
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

    fn next(&mut self) -> Rj<u8> {
        let b = self
            .peek()
            .ok_or_else(|| self.error("the text ends early"))?;
        self.i += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Rj<()> {
        if self.next()? == want {
            return Ok(());
        }
        self.i -= 1;
        Err(self.error(&format!("expected `{}`", char::from(want))))
    }

    /// Writes the string at the current `"` as serde_json would write it after parsing it;
    /// its unescaped text when it had escapes (else it is what was written between quotes).
    fn string(&mut self, out: &mut String) -> Rj<Option<String>> {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let start = self.i;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none is `"`, `\` or a control character (the lowest
            // set bit of `hit` marks the first such byte exactly).
            while let Some(Ok(chunk)) = self.s.get(i..i + 8).map(<[u8; 8]>::try_from) {
                let w = u64::from_le_bytes(chunk);
                let q = w ^ (LO * u64::from(b'"'));
                let b = w ^ (LO * u64::from(b'\\'));
                let hit = ((q.wrapping_sub(LO) & !q)
                    | (b.wrapping_sub(LO) & !b)
                    | (w.wrapping_sub(LO * 0x20) & !w))
                    & HI;
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
                Some(0..=0x1f) => {
                    self.i = i;
                    return Err(self.error("a control character in a string"));
                }
                Some(_) => i += 1,
                None => {
                    self.i = self.s.len();
                    return Err(self.error("a string does not end"));
                }
            }
        }
        self.i = i + 1;
        let quoted = &self.text[start..self.i];
        if !escaped {
            out.push_str(quoted);
            return Ok(None);
        }
        let text: String = serde_json::from_str(quoted).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!(
                "{e} (in the string at byte {start})"
            ))
        })?;
        escape_into(out, &text);
        Ok(Some(text))
    }

    /// Writes the `true`, `false`, `null` or number here as serde_json writes it.
    fn scalar(&mut self, out: &mut String) -> Rj<()> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if matches!(
                b,
                b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t' | b':' | b'"'
            ) {
                break;
            }
            self.i += 1;
        }
        let token = &self.text[start..self.i];
        if matches!(token, "true" | "false" | "null") {
            out.push_str(token);
            return Ok(());
        }
        match number(token) {
            Some((mantissa, exponent)) => {
                out.push_str(mantissa);
                if let Some(exponent) = exponent {
                    out.push('e');
                    if !exponent.starts_with(['+', '-']) {
                        out.push('+');
                    }
                    out.push_str(exponent);
                }
                Ok(())
            }
            None => {
                self.i = start;
                Err(self.error("expected a value"))
            }
        }
    }
}

/// A JSON number (RFC 8259 §6) split into its text before the exponent and the exponent's
/// text after `e`/`E`; `None` when `token` is not one.
fn number(token: &str) -> Option<(&str, Option<&str>)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (mantissa, exponent) = match token.find(['e', 'E']) {
        Some(at) => (&token[..at], Some(&token[at + 1..])),
        None => (token, None),
    };
    let unsigned = mantissa.strip_prefix('-').unwrap_or(mantissa);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let int_ok = digits(int) && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(digits);
    let exp_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    (int_ok && frac_ok && exp_ok).then_some((mantissa, exponent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::serde_json::Value;

    /// Each object of `page` as the tree wrote it: parsed to a `Value`, written back.
    fn by_tree(page: &str) -> Vec<String> {
        let items: Vec<Value> = serde_json::from_str(page).expect("valid JSON");
        items.iter().map(Value::to_string).collect()
    }

    fn by_canon(page: &str) -> Result<Vec<String>> {
        let mut canon = Canon::default();
        let mut out = Vec::new();
        canon.objects(page, "test", |o| {
            out.push(o.finish());
            Ok(())
        })?;
        Ok(out)
    }

    fn same_as_tree(page: &str) {
        let canon = by_canon(page).unwrap_or_else(|e| panic!("{page}: {}", e.message));
        assert_eq!(canon, by_tree(page), "{page}");
    }

    #[test]
    fn items_that_are_not_objects_are_read_and_counted() {
        let mut canon = Canon::default();
        let mut records = Vec::new();
        let skipped = canon
            .objects(r#"[1, {"b":1,"a":2}, "x", [{"c":0}], null]"#, "test", |o| {
                records.push(o.finish());
                Ok(())
            })
            .expect("valid");
        assert_eq!(
            (skipped, records),
            (4, vec![r#"{"a":2,"b":1}"#.to_string()])
        );
        assert!(canon.objects(r#"[1, "\q"]"#, "test", |_| Ok(())).is_err());
    }

    #[test]
    fn objects_are_written_as_the_tree_writes_them() {
        for page in [
            "[]",
            " [ ] ",
            "[{}]",
            "[ {} , { } ]",
            r#"[{"b":1,"a":2}]"#,
            r#"[{"a":1,"a":2,"b":{"y":[1,{"d":0,"c":-0}],"x":null},"a":3}]"#,
            "[\n {\"z\" : -1.5E+3 ,\t\"b\":true,\"c\":null,\"d\":false, \"e\": 1e5, \"f\": 2E-7, \"g\": 0.10}\r\n]",
            r#"[{"s":"x\"y\\","t":"\/\b\f\n\r\t\u0001\u001f\u007f","u":"\u00e9\ud83d\ude00 é😀","e":""}]"#,
            r#"[{"k\u0065y":1,"q\"k":2,"a\\":3,"a":4,"\u0000":5,"key":0}]"#,
            r#"[{"n":18446744073709551616,"m":-9223372036854775809,"o":123456789012345678901234567890.5}]"#,
            r#"[{"type":"message","user":"U1","text":"hi","ts":"1700000000.000200","blocks":[{"type":"rich_text","block_id":"b1","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"hi"}]}]}]}]"#,
        ] {
            same_as_tree(page);
        }
    }

    #[test]
    fn generated_objects_are_written_as_the_tree_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
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
                "\"\\u0041\\n\\/\"",
                "\"é😀\"",
                "\"https:\\/\\/x.slack.com\\/a\"",
                "\"\\u001b\\u2028\"",
            ];
            match next() % if depth > 3 { 4 } else { 6 } {
                0 => strings[(next() % strings.len() as u64) as usize].to_string(),
                1 => [
                    "0",
                    "-12",
                    "1.5e-7",
                    "1E+2",
                    "18446744073709551616",
                    "-0",
                    "2.50",
                ][(next() % 7) as usize]
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
            let keys = ["a", "b", "ts", "k\\u0065y", "b\\\"", "é", "B", "a"];
            let n = next() % 6;
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "\"{}\"{}{}",
                        keys[(next() % keys.len() as u64) as usize],
                        if next().is_multiple_of(2) { ":" } else { " : " },
                        value(next, depth)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        for _ in 0..2000 {
            let n = next() % 4;
            let items: Vec<String> = (0..n).map(|_| object(&mut next, 0)).collect();
            same_as_tree(&format!("[{}]", items.join(",\n")));
        }
    }

    #[test]
    fn what_the_tree_refuses_is_refused() {
        for bad in [
            "",
            "{}",
            "[1,]",
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
            r#"[{"a":"\ud800"}]"#,
            r#"[{"a":"\q"}]"#,
            "[{\"a\":\"tab\there\"}]",
            r#"[{"a":01}]"#,
            r#"[{"a":1.}]"#,
            r#"[{"a":.5}]"#,
            r#"[{"a":1e}]"#,
            r#"[{"a":+1}]"#,
            r#"[{"a":tru}]"#,
            r#"[{"a":nulls}]"#,
            r#"[{"a":[1 2]}]"#,
        ] {
            assert!(by_canon(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Vec<Value>>(bad).is_err(), "{bad:?}");
        }
        // serde_json's nesting limit: 127 levels read, 128 not (the page's object and array
        // are two of them).
        let nested = |levels: usize| {
            let inner = levels - 3;
            format!(
                "{{\"m\":[{{\"a\":{}1{}}}]}}",
                "[".repeat(inner),
                "]".repeat(inner)
            )
        };
        for (levels, ok) in [(127, true), (128, false)] {
            let page = nested(levels);
            assert_eq!(serde_json::from_str::<Value>(&page).is_ok(), ok, "{levels}");
            let items = &page[5..page.len() - 1];
            assert_eq!(by_canon(items).is_ok(), ok, "{levels}");
        }
    }

    #[test]
    fn fields_are_read_and_added() {
        let page =
            r#"[{"ts":"1.5","n":3,"f":3.0,"neg":-1,"e":{"ts":"2.5"},"x":"a\/b","ts":"1.6"}]"#;
        let mut canon = Canon::default();
        canon
            .objects(page, "test", |mut o| {
                assert_eq!(o.str("ts").as_deref(), Some("1.6"), "the last of a repeated key");
                assert_eq!(o.str("x").as_deref(), Some("a/b"));
                assert_eq!(o.str("n"), None);
                assert_eq!(o.u64("n"), Some(3));
                assert_eq!(o.u64("f"), None);
                assert_eq!(o.u64("neg"), None);
                assert_eq!(o.inner_str("e", "ts").as_deref(), Some("2.5"));
                assert_eq!(o.inner_str("x", "ts"), None);
                o.insert("x", "\"replaced\"");
                o.insert("channel_id", "\"C1\"");
                assert_eq!(
                    o.finish(),
                    r#"{"channel_id":"C1","e":{"ts":"2.5"},"f":3.0,"n":3,"neg":-1,"ts":"1.6","x":"replaced"}"#
                );
                Ok(())
            })
            .expect("valid");
    }
}
