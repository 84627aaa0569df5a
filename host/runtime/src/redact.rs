//! The one redaction step: every string that came from a plugin passes here before it reaches
//! a log line, an API answer, a run record, a stored manifest or an error.
//!
//! A secret is looked for in the forms a plugin can carry it out in without the host noticing:
//! as is, lower- and upper-cased, hex-encoded (either case), JSON-escaped, percent-encoded (RFC 3986 with upper- or lower-case hex, JavaScript's
//! `encodeURIComponent`, and the `application/x-www-form-urlencoded` form), and base64 (RFC 4648 standard and URL-safe
//! alphabets, at each of the three byte alignments it can have inside a longer encoded
//! string, e.g. `Basic base64(user:secret)`). Values shorter than [`MIN_SECRET_LEN`] bytes are
//! not searched for: they would blank out ordinary text.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "[redacted]";
/// Shorter secret values are not redacted: masking a short word (`cursor`, `items`) would
/// rewrite state keys, stream and column names that merely contain it. Real tokens are longer.
pub const MIN_SECRET_LEN: usize = 8;

/// Replaces the values of one call's secrets, in every encoding listed in the module doc.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    /// The strings to mask, longest first (so a longer form is masked before its substrings).
    needles: Arc<[String]>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The needles are secrets: only their count is shown.
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for these secret values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for v in values {
            if v.len() < MIN_SECRET_LEN {
                continue;
            }
            needles.extend(encodings(v));
        }
        needles.retain(|n| n.len() >= MIN_SECRET_LEN);
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self {
            needles: needles.into(),
        }
    }

    /// Bytes of the longest form searched for (0 when there is none).
    pub fn longest_form(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret form replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for n in self.needles.iter() {
            if out.contains(n.as_str()) {
                out = Cow::Owned(out.replace(n.as_str(), MASK));
            }
        }
        out
    }

    /// `bytes` with every secret form replaced by [`MASK`], for bodies that are not UTF-8
    /// text (a secret's forms are ASCII or UTF-8, so they are found byte for byte).
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for n in self.needles.iter() {
            let finder = memchr::memmem::Finder::new(n.as_bytes());
            if finder.find(&out).is_none() {
                continue;
            }
            let mut next = Vec::with_capacity(out.len());
            let mut at = 0;
            for hit in finder.find_iter(&out) {
                if hit < at {
                    continue;
                }
                next.extend_from_slice(&out[at..hit]);
                next.extend_from_slice(MASK.as_bytes());
                at = hit + n.len();
            }
            next.extend_from_slice(&out[at..]);
            out = next;
        }
        out
    }

    /// [`Redactor::redact`] into an owned string.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// A JSON value with every string and every object key redacted.
    pub fn redact_json(&self, value: Value) -> Value {
        if self.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.redact_string(s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.redact_string(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// The forms of `secret` a plugin could hide it in (see the module doc).
fn encodings(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    // URL hosts are lower-cased by parsers, and a percent-encoded secret may be decoded by one;
    // upper case and hex are the next cheapest disguises (an outside attack, session 11, got
    // both through a validate answer, a run error and the log).
    out.push(secret.to_lowercase());
    out.push(secret.to_uppercase());
    out.push(hex::encode(secret));
    out.push(hex::encode_upper(secret));
    if let Ok(decoded) = percent_encoding::percent_decode_str(secret).decode_utf8() {
        out.push(decoded.into_owned());
    }
    // Rust's `{:?}` escaping (control characters as `\u{7f}`, combining marks as
    // `\u{301}`): serde's error messages quote plugin text that way ("invalid type: string …").
    let debug = format!("{secret:?}");
    out.push(debug[1..debug.len() - 1].to_string());
    if let Ok(json) = serde_json::to_string(secret) {
        let json = json[1..json.len() - 1].to_string();
        // Other JSON encoders also escape `/` (PHP) and `<`, `>`, `&` (Go), or every character.
        out.push(json.replace('/', "\\/"));
        out.push(
            json.replace('&', "\\u0026")
                .replace('<', "\\u003c")
                .replace('>', "\\u003e"),
        );
        out.push(json);
    }
    out.push(
        secret
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
    );
    // Percent-encoders differ in what they leave alone: everything but alphanumerics, or
    // RFC 3986's unreserved characters too; hex digits in either case.
    const UNRESERVED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    // JavaScript's `encodeURIComponent` (ECMA-262, "encodeURIComponent"): also leaves
    // `! * ' ( )` alone.
    const URI_COMPONENT: &percent_encoding::AsciiSet = &UNRESERVED
        .remove(b'!')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    for set in [NON_ALPHANUMERIC, UNRESERVED, URI_COMPONENT] {
        let pct = utf8_percent_encode(secret, set).to_string();
        out.push(pct.to_lowercase_hex());
        out.push(pct);
    }
    out.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    let bytes = secret.as_bytes();
    for align in 0..3usize {
        let mut padded = vec![0u8; align];
        padded.extend_from_slice(bytes);
        // Characters [ceil(8·align/6), floor(8·(align+n)/6)) depend on the secret alone.
        let start = (8 * align).div_ceil(6);
        let end = 8 * (align + bytes.len()) / 6;
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ] {
            let enc = engine.encode(&padded);
            if let Some(core) = enc.get(start..end) {
                out.push(core.to_string());
            }
        }
    }
    out
}

/// Percent-encoded text with its hex digits in lower case.
trait LowerHex {
    fn to_lowercase_hex(&self) -> String;
}

impl LowerHex for String {
    fn to_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut after_pct = 0;
        for c in self.chars() {
            if c == '%' {
                after_pct = 2;
                out.push(c);
            } else if after_pct > 0 {
                after_pct -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// A URL as it may be logged: scheme, host, port and path, without user info, query or
/// fragment (a query often carries a key), then redacted.
pub fn loggable_url(url: &url::Url, redactor: &Redactor) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?…");
    }
    redactor.redact_string(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_s3cr3t/+Tok=en";

    #[test]
    fn every_encoding_is_masked() {
        let r = Redactor::new([SECRET]);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let b64url = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let cases = [
            format!("plain {SECRET} text"),
            format!("json {}", serde_json::to_string(SECRET).unwrap()),
            format!("q=?t={}", utf8_percent_encode(SECRET, NON_ALPHANUMERIC)),
            format!(
                "lower {}",
                utf8_percent_encode(SECRET, NON_ALPHANUMERIC)
                    .to_string()
                    .to_lowercase_hex()
            ),
            format!(
                "form {}",
                url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>()
            ),
            format!("basic {}", b64(&format!("user:{SECRET}"))),
            format!("b64 {}", b64(SECRET)),
            format!("b64 shifted {}", b64(&format!("x{SECRET}"))),
            format!("b64 shifted twice {}", b64(&format!("xy{SECRET}y"))),
            format!("url-safe {}", b64url(&format!("ab{SECRET}"))),
        ];
        for case in cases {
            let out = r.redact(&case);
            assert!(out.contains(MASK), "not masked: {case} → {out}");
            for form in encodings(SECRET) {
                assert!(!out.contains(&form), "{form} left in {out}");
            }
        }
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn rust_debug_escapes_of_a_secret_are_masked() {
        // helper-25's inputs: a DEL and a combining accent inside the secret, quoted by a serde
        // error message (which formats the offending string with `{:?}`).
        for secret in ["Zq9\u{7f}SecretValue77", "Secre\u{301}tValue77"] {
            let r = Redactor::new([secret]);
            let err = serde_json::from_str::<u32>(&serde_json::to_string(secret).unwrap())
                .unwrap_err()
                .to_string();
            assert!(!err.contains(secret), "the error escapes it: {err}");
            let out = r.redact(&err);
            assert!(
                out.contains(MASK) && !out.contains("SecretValue77"),
                "{out}"
            );
        }
    }

    #[test]
    fn json_keys_and_values_are_masked() {
        let r = Redactor::new([SECRET]);
        let v = serde_json::json!({SECRET: [format!("x{SECRET}"), 1, {"k": SECRET}]});
        let out = r.redact_json(v).to_string();
        assert!(!out.contains(SECRET), "{out}");
        assert_eq!(out.matches(MASK).count(), 3, "{out}");
    }

    #[test]
    fn short_values_are_left_alone() {
        // A short token would otherwise rewrite state keys and names that merely contain it.
        let r = Redactor::new(["cursor"]);
        assert!(r.is_empty());
        assert_eq!(r.redact(r#"{"cursor":12}"#), r#"{"cursor":12}"#);
    }

    #[test]
    fn forms_that_other_encoders_and_url_parsers_produce_are_masked() {
        let secret = "Zq8Kw3+Xv/Jp&T-y~Rb";
        let r = Redactor::new([secret]);
        for text in [
            "https://zq8kw3+xv/jp&t-y~rb.example.invalid".to_string(),
            r"Zq8Kw3+Xv\/Jp&T-y~Rb".to_string(),
            r"Zq8Kw3+Xv/Jp\u0026T-y~Rb".to_string(),
            secret
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
            "Zq8Kw3%2bXv%2fJp%26T-y~Rb".to_string(),
        ] {
            assert!(r.redact(&text).contains(MASK), "not masked: {text}");
        }
        for text in [
            secret.to_uppercase(),
            hex::encode(secret),
            hex::encode_upper(secret),
        ] {
            assert!(
                r.redact(&format!("x {text} y")).contains(MASK),
                "not masked: {text}"
            );
        }
        let pct = Redactor::new(["sec%41ret_pct_value"]);
        assert!(pct.redact("secAret_pct_value").contains(MASK));
    }

    #[test]
    fn urls_are_logged_without_query_or_user_info() {
        let r = Redactor::new([SECRET]);
        let u = url::Url::parse(&format!(
            "https://user:pw@{}.example.com:8443/a/{}?key={SECRET}#f",
            "tok3nhost", "tok3nhost"
        ))
        .unwrap();
        let r2 = Redactor::new(["tok3nhost"]);
        assert_eq!(
            loggable_url(&u, &r2),
            "https://[redacted].example.com:8443/a/[redacted]?…"
        );
        assert!(!loggable_url(&u, &r).contains(SECRET));
    }
}
