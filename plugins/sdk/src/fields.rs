//! An object's top-level fields with their values left as JSON text, for connectors that
//! reshape upstream items into records without building a tree of each one.
//!
//! Reading a page straight into `Vec<Fields>` costs one scan of the page (serde_json checks
//! each value and borrows it), where a `serde_json::Value` per item allocates a map, a string
//! per key and a node per value — in the guest, most of a sync's CPU (GitHub issues; Linear
//! nodes). Values keep their exact text (numbers are not rounded, escapes not rewritten).
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

    /// Appends `"key":` — a key borrowed from the input had no escapes there, so it goes back
    /// as it was; any other is escaped.
    fn key(&mut self, key: &str, borrowed_plain: bool) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        if borrowed_plain {
            self.out.push('"');
            self.out.push_str(key);
            self.out.push('"');
        } else {
            self.out.push_str(&serde_json::Value::from(key).to_string());
        }
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

/// Whether `key` can go between quotes as it is (nothing JSON must escape).
fn is_plain(key: &str) -> bool {
    key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn an_empty_record_is_an_empty_object() {
        assert_eq!(RecordWriter::with_capacity(0).finish(), "{}");
    }
}
