//! Bounded label values: what plugins and upstreams name (connector ids, stream names, hosts)
//! becomes a label only after [`sanitize`] and within a [`LabelCap`].

use std::collections::HashSet;
use std::sync::Mutex;

/// The label value every value past a [`LabelCap`] is counted under.
pub const OTHER: &str = "_other";

/// Longest label value kept, in characters; longer ones are cut.
pub const MAX_LABEL_CHARS: usize = 64;

/// A label value from untrusted text: ASCII letters, digits and `_ . : -` kept, anything else
/// replaced by `_`, cut to [`MAX_LABEL_CHARS`]; an empty value becomes `_`.
pub fn sanitize(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// At most `max` distinct values of one label dimension; later new values become [`OTHER`].
/// Values seen once stay admitted for the life of the process.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    /// A cap of `max` distinct values.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label value for `raw`: sanitized, or [`OTHER`] once `max` others were admitted.
    pub fn admit(&self, raw: &str) -> String {
        let value = sanitize(raw);
        let Ok(mut seen) = self.seen.lock() else {
            return OTHER.to_string();
        };
        if seen.contains(&value) {
            return value;
        }
        if seen.len() >= self.max {
            return OTHER.to_string();
        }
        seen.insert(value.clone());
        value
    }
}
