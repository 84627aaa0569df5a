//! HTTP cassettes: a plugin's outbound exchanges recorded to a file, or answered from it with
//! no network at all, so a connector's test runs offline and gives the same output every time
//! (`sluice plugin test --cassette DIR [--record]`).
//!
//! The cassette sits in the one choke point, [`Outbound::fetch`](crate::outbound::Outbound::fetch),
//! after the destination check: a replayed request must still be one the plugin declares and the
//! operator allows. What is recorded is what the plugin got back — the answer after the host's
//! redirects, retries and rate-limit waits — so replay skips all of them.
//!
//! File: `DIR/cassette.jsonl`, one JSON object per exchange, in the order they completed:
//! `{"method":"GET","url":"…","request_body":…,"status":200,"headers":[["link","…"]],"body":…}`
//! or, for a transport failure, `{"method":…,"url":…,"error":"timeout"}` (or
//! `{"connection":"…"}`, `{"too_large":N}`). Bodies are a JSON string when they are UTF-8, else
//! `{"base64":"…"}`. A recording is written to a temporary file and renamed over
//! `cassette.jsonl` only by [`Cassette::finish`]: a failed recording leaves the previous
//! cassette as it was, and a symlink named `cassette.jsonl` is replaced, never written through.
//!
//! Secrets: secret headers are never written (no request header is); every secret value of the
//! call, in each form [`Redactor`] knows (raw, JSON, percent, base64), is replaced by
//! [`MASK`](crate::redact::MASK) in the URL, the request body, the response headers and the
//! response body (byte for byte in a body that is not UTF-8); a query or form parameter whose
//! decoded value holds a secret (whatever its percent-encoding) is masked whole; `set-cookie`
//! answers are dropped. While recording, the plugin's `accept-encoding` is not sent, and an
//! answer that still comes compressed (`content-encoding`) is not recorded — it could not be
//! searched — but listed in [`Cassette::refused`]. Replay masks the live request the same way
//! before matching, so it matches whatever secret value the test passes (of at least
//! [`MIN_SECRET_LEN`](crate::redact::MIN_SECRET_LEN) bytes; shorter ones are never masked, and
//! `sluice plugin test --record` refuses them).
//!
//! Matching: method, masked URL and masked request body, exactly. Each recorded exchange
//! answers once, in recorded order per request (two identical GETs recorded twice replay twice).
//! A request with no exchange left is refused with
//! [`OutboundError::Denied`]`("not in the cassette: …")` and kept in [`Cassette::misses`].
//!
//! Limits on a cassette read for replay (it is a test fixture, and may be hand-edited):
//! [`MAX_CASSETTE_BYTES`], [`MAX_HEADERS`] per answer; a regular file only.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use crate::redact::{MASK, Redactor, loggable_url};

/// The file a cassette directory holds.
pub const FILE_NAME: &str = "cassette.jsonl";

/// Largest cassette file read for replay.
pub const MAX_CASSETTE_BYTES: u64 = 64 << 20;

/// Most headers one recorded answer may hold (a hand-edited file could hold millions, each
/// costing far more parsed than its bytes).
pub const MAX_HEADERS: usize = 256;

/// Why a cassette could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("cassette {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cassette {path}, line {line}: {why}")]
    Parse {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("cassette {path} is larger than {MAX_CASSETTE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("cassette {path} is not a regular file")]
    NotAFile { path: PathBuf },
}

/// A body as stored: text when it is UTF-8 (readable and diffable), base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    Binary { base64: String },
}

impl Body {
    /// A response body, secrets masked.
    fn of(bytes: &[u8], redactor: &Redactor) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(redactor.redact(text).into_owned()),
            Err(_) => Body::Binary {
                base64: base64::engine::general_purpose::STANDARD
                    .encode(redactor.redact_bytes(bytes)),
            },
        }
    }

    /// A request body, secrets masked, form parameters holding one masked whole.
    fn of_request(bytes: &[u8], redactor: &Redactor) -> Body {
        match Body::of(bytes, redactor) {
            Body::Text(text) if !text.starts_with(['{', '[']) => {
                Body::Text(mask_form(&text, redactor).unwrap_or(text))
            }
            other => other,
        }
    }

    fn into_bytes(self) -> Result<Vec<u8>, String> {
        match self {
            Body::Text(t) => Ok(t.into_bytes()),
            Body::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| format!("bad base64 body: {e}")),
        }
    }
}

/// `application/x-www-form-urlencoded` text (a query, a form body) with each parameter whose
/// decoded name or value holds a secret replaced by [`MASK`]; `None` when none does.
fn mask_form(text: &str, redactor: &Redactor) -> Option<String> {
    let holds = |s: &str| redactor.redact(s) != s;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, v)| holds(k) || holds(v)) {
        return None;
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        let k = if holds(k) { MASK } else { k.as_str() };
        let v = if holds(v) { MASK } else { v.as_str() };
        out.append_pair(k, v);
    }
    Some(out.finish())
}

/// A URL as recorded: secrets masked, query parameters holding one masked whole.
fn mask_url(url: &url::Url, redactor: &Redactor) -> String {
    let mut url = url.clone();
    if let Some(masked) = url.query().and_then(|q| mask_form(q, redactor)) {
        url.set_query(Some(&masked));
    }
    redactor.redact(url.as_str()).into_owned()
}

/// A transport failure as stored (the variants of [`OutboundError`] an upstream can cause).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Failure {
    Timeout,
    Connection(String),
    TooLarge(u64),
}

/// What the plugin got: an answer or a transport failure.
#[derive(Debug, Clone)]
enum Outcome {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
    },
    Failed(Failure),
}

/// One line of the file. Flat (no flattened or untagged enum around the headers), so that
/// serde streams the headers through [`capped_headers`] instead of buffering them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    method: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "capped_headers"
    )]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Failure>,
}

impl Exchange {
    fn outcome(self) -> Result<(Key, Outcome), String> {
        let outcome = match (self.status, self.error) {
            (Some(status), None) => {
                if !(100..=999).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                let body = self.body.unwrap_or(Body::Text(String::new()));
                body.clone().into_bytes()?;
                Outcome::Response {
                    status,
                    headers: self.headers,
                    body,
                }
            }
            (None, Some(error)) => Outcome::Failed(error),
            _ => return Err("an exchange has either a `status` or an `error`".into()),
        };
        let key = Key {
            method: self.method,
            url: self.url,
            body: self.request_body,
        };
        Ok((key, outcome))
    }
}

fn capped_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Capped;
    impl<'de> serde::de::Visitor<'de> for Capped {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of [name, value] pairs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = seq.next_element::<(String, String)>()? {
                if out.len() == MAX_HEADERS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_HEADERS} headers"
                    )));
                }
                out.push(pair);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Capped)
}

/// What identifies a request in the cassette: method, masked URL, masked body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    method: String,
    url: String,
    body: Option<Body>,
}

impl Key {
    pub(crate) fn of(req: &OutboundRequest) -> Key {
        Key {
            method: req.method.as_str().to_string(),
            url: mask_url(&req.url, &req.redactor),
            body: req
                .body
                .as_deref()
                .map(|b| Body::of_request(b, &req.redactor)),
        }
    }
}

/// A recording in progress: the temporary file, renamed into place by [`Cassette::finish`].
struct Recording {
    file: std::fs::File,
    temp: PathBuf,
}

enum Tape {
    Record(Option<Recording>),
    Replay(HashMap<Key, VecDeque<Outcome>>),
}

/// A cassette in record or replay mode; shared by every call of the process.
pub struct Cassette {
    path: PathBuf,
    tape: Mutex<Tape>,
    misses: Mutex<Vec<String>>,
    refused: Mutex<Vec<String>>,
    recorded: Mutex<usize>,
}

impl std::fmt::Debug for Cassette {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cassette")
            .field("path", &self.path)
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl Drop for Cassette {
    fn drop(&mut self) {
        // An unfinished recording leaves nothing behind (and the previous cassette as it was).
        if let Tape::Record(Some(r)) = &*self.tape.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = std::fs::remove_file(&r.temp);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cassette {
    /// Starts recording for `dir/cassette.jsonl` (the directory is created). Exchanges go to a
    /// new temporary file beside it until [`Cassette::finish`].
    pub fn record(dir: &Path) -> Result<Cassette, CassetteError> {
        let path = dir.join(FILE_NAME);
        let temp = dir.join(format!(".{FILE_NAME}.recording-{}", std::process::id()));
        let io = |source| CassetteError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let _ = std::fs::remove_file(&temp);
        // `create_new`: never through a planted symlink or FIFO.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io)?;
        Ok(Cassette {
            path,
            tape: Mutex::new(Tape::Record(Some(Recording { file, temp }))),
            misses: Mutex::default(),
            refused: Mutex::default(),
            recorded: Mutex::new(0),
        })
    }

    /// Puts a recording in place (renamed over `cassette.jsonl`, replacing a symlink rather
    /// than writing through it). Without this call the recording is discarded.
    pub fn finish(&self) -> Result<(), CassetteError> {
        let mut tape = lock(&self.tape);
        let Tape::Record(rec) = &mut *tape else {
            return Ok(());
        };
        let Some(r) = rec.take() else {
            return Ok(());
        };
        let io = |source| CassetteError::Io {
            path: self.path.clone(),
            source,
        };
        r.file.sync_all().map_err(io)?;
        std::fs::rename(&r.temp, &self.path).map_err(io)
    }

    /// Opens `dir/cassette.jsonl` for replay.
    pub fn replay(dir: &Path) -> Result<Cassette, CassetteError> {
        let path = dir.join(FILE_NAME);
        let io = |source| CassetteError::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(io)?;
        if !meta.is_file() {
            return Err(CassetteError::NotAFile { path });
        }
        if meta.len() > MAX_CASSETTE_BYTES {
            return Err(CassetteError::TooLarge { path });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(
                std::fs::File::open(&path).map_err(io)?,
                MAX_CASSETTE_BYTES + 1,
            ),
            &mut text,
        )
        .map_err(io)?;
        if text.len() as u64 > MAX_CASSETTE_BYTES {
            return Err(CassetteError::TooLarge { path });
        }
        let mut tape: HashMap<Key, VecDeque<Outcome>> = HashMap::new();
        let mut count = 0;
        for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parse = |why: String| CassetteError::Parse {
                path: path.clone(),
                line: i + 1,
                why,
            };
            let ex: Exchange = serde_json::from_str(line).map_err(|e| parse(e.to_string()))?;
            let (key, outcome) = ex.outcome().map_err(parse)?;
            tape.entry(key).or_default().push_back(outcome);
            count += 1;
        }
        Ok(Cassette {
            path,
            tape: Mutex::new(Tape::Replay(tape)),
            misses: Mutex::default(),
            refused: Mutex::default(),
            recorded: Mutex::new(count),
        })
    }

    /// The cassette file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this cassette records (else it replays).
    pub fn is_recording(&self) -> bool {
        matches!(*lock(&self.tape), Tape::Record(_))
    }

    /// Exchanges written so far (record) or read from the file (replay).
    pub fn len(&self) -> usize {
        *lock(&self.recorded)
    }

    /// Whether the cassette holds no exchange.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests replay could not answer (`METHOD url`, secrets masked), in order.
    pub fn misses(&self) -> Vec<String> {
        lock(&self.misses).clone()
    }

    /// Exchanges a recording left out, with why (`METHOD url: reason`).
    pub fn refused(&self) -> Vec<String> {
        lock(&self.refused).clone()
    }

    /// Exchanges recorded but never asked for during replay (0 when recording).
    pub fn unused(&self) -> usize {
        match &*lock(&self.tape) {
            Tape::Record(_) => 0,
            Tape::Replay(tape) => tape.values().map(VecDeque::len).sum(),
        }
    }

    /// In replay, the recorded answer to `req` (or a `Denied` miss); `None` when recording.
    pub(crate) fn answer(
        &self,
        req: &OutboundRequest,
    ) -> Option<Result<OutboundResponse, OutboundError>> {
        let key = Key::of(req);
        let mut tape = lock(&self.tape);
        let Tape::Replay(tape) = &mut *tape else {
            return None;
        };
        let Some(outcome) = tape.get_mut(&key).and_then(VecDeque::pop_front) else {
            let what = format!("{} {}", key.method, loggable_url(&req.url, &req.redactor));
            lock(&self.misses).push(what.clone());
            return Some(Err(OutboundError::Denied(format!(
                "not in the cassette {}: {what} (no recorded answer; record it with --record)",
                self.path.display()
            ))));
        };
        Some(match outcome {
            Outcome::Response {
                status,
                headers,
                body,
            } => Ok(OutboundResponse {
                status,
                headers,
                // Checked when the file was read.
                body: body.into_bytes().unwrap_or_default(),
            }),
            Outcome::Failed(Failure::Timeout) => Err(OutboundError::Timeout),
            Outcome::Failed(Failure::Connection(why)) => Err(OutboundError::Connection(why)),
            Outcome::Failed(Failure::TooLarge(n)) => Err(OutboundError::TooLarge(n)),
        })
    }

    /// When recording, appends what `req` got (a denial or a cancel is not the upstream's
    /// answer and is not recorded; a compressed answer is refused, see the module doc). Write
    /// errors are logged: a test then fails on replay.
    pub(crate) fn keep(
        &self,
        key: Key,
        redactor: &Redactor,
        result: &Result<OutboundResponse, OutboundError>,
    ) {
        let (status, headers, body, error) = match result {
            Ok(r) => {
                if let Some((_, coding)) = r.headers.iter().find(|(name, value)| {
                    name.eq_ignore_ascii_case("content-encoding")
                        && !value.trim().eq_ignore_ascii_case("identity")
                }) {
                    lock(&self.refused).push(format!(
                        "{} {}: compressed answer (content-encoding {coding}) not recorded",
                        key.method, key.url
                    ));
                    return;
                }
                let headers = r
                    .headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("set-cookie"))
                    .map(|(name, value)| (name.clone(), redactor.redact(value).into_owned()))
                    .collect();
                (
                    Some(r.status),
                    headers,
                    Some(Body::of(&r.body, redactor)),
                    None,
                )
            }
            Err(OutboundError::Timeout) => (None, vec![], None, Some(Failure::Timeout)),
            Err(OutboundError::Connection(why)) => (
                None,
                vec![],
                None,
                Some(Failure::Connection(redactor.redact(why).into_owned())),
            ),
            Err(OutboundError::TooLarge(n)) => (None, vec![], None, Some(Failure::TooLarge(*n))),
            Err(
                OutboundError::Denied(_)
                | OutboundError::InvalidRequest(_)
                | OutboundError::Cancelled,
            ) => return,
        };
        let line = Exchange {
            method: key.method,
            url: key.url,
            request_body: key.body,
            status,
            headers,
            body,
            error,
        };
        let mut tape = lock(&self.tape);
        let Tape::Record(Some(rec)) = &mut *tape else {
            return;
        };
        let written = serde_json::to_string(&line)
            .map_err(std::io::Error::other)
            .and_then(|text| writeln!(rec.file, "{text}"));
        match written {
            Ok(()) => *lock(&self.recorded) += 1,
            Err(e) => tracing::error!(path = %self.path.display(), "cassette write failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;
    use reqwest::header::HeaderMap;

    const SECRET: &str = "ghp_cassette_secret_1234";

    fn request(url: &str, body: Option<&[u8]>) -> OutboundRequest {
        OutboundRequest {
            method: if body.is_some() {
                Method::POST
            } else {
                Method::GET
            },
            url: url::Url::parse(url).expect("test URL"),
            headers: HeaderMap::new(),
            secret_headers: HeaderMap::new(),
            body: body.map(<[u8]>::to_vec),
            idempotent: true,
            redactor: Redactor::new([SECRET]),
        }
    }

    fn keep(c: &Cassette, req: &OutboundRequest, result: Result<OutboundResponse, OutboundError>) {
        c.keep(Key::of(req), &req.redactor, &result);
    }

    fn response(body: &[u8]) -> OutboundResponse {
        OutboundResponse {
            status: 200,
            headers: vec![
                ("link".into(), "<https://x/2>; rel=\"next\"".into()),
                ("set-cookie".into(), "session=abc".into()),
                ("x-echo".into(), format!("token {SECRET}")),
            ],
            body: body.to_vec(),
        }
    }

    #[test]
    fn records_then_replays_in_order_with_secrets_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Cassette::record(dir.path()).expect("record");
        let get = request(&format!("https://api.example.com/a?key={SECRET}"), None);
        keep(&rec, &get, Ok(response(b"first")));
        keep(
            &rec,
            &get,
            Ok(response(format!("second {SECRET}").as_bytes())),
        );
        let post = request("https://api.example.com/graphql", Some(b"{\"q\":1}"));
        keep(&rec, &post, Ok(response(&[0xff, 0x00, 0x01])));
        keep(
            &rec,
            &request("https://api.example.com/t", None),
            Err(OutboundError::Timeout),
        );
        keep(
            &rec,
            &request("https://api.example.com/d", None),
            Err(OutboundError::Denied("no".into())),
        );
        assert_eq!(rec.len(), 4, "a denial is not recorded");
        rec.finish().expect("finish");
        drop(rec);

        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert!(!text.contains(SECRET), "secret in cassette: {text}");
        assert!(!text.contains("session=abc"), "set-cookie kept: {text}");
        assert_eq!(text.lines().count(), 4);

        let play = Cassette::replay(dir.path()).expect("replay");
        let first = play.answer(&get).expect("replay mode").expect("recorded");
        assert_eq!(first.body, b"first");
        assert_eq!(first.headers.len(), 2);
        let second = play.answer(&get).expect("replay mode").expect("recorded");
        assert_eq!(second.body, b"second [redacted]");
        let binary = play.answer(&post).expect("replay mode").expect("recorded");
        assert_eq!(binary.body, vec![0xff, 0x00, 0x01]);
        let timeout = play.answer(&request("https://api.example.com/t", None));
        assert!(matches!(timeout, Some(Err(OutboundError::Timeout))));
        // The third identical GET was never recorded.
        let miss = play.answer(&get).expect("replay mode");
        assert!(
            matches!(miss, Err(OutboundError::Denied(ref why)) if why.contains("not in the cassette"))
        );
        let other_body = request("https://api.example.com/graphql", Some(b"{\"q\":2}"));
        assert!(matches!(
            play.answer(&other_body),
            Some(Err(OutboundError::Denied(_)))
        ));
        let misses = play.misses();
        assert_eq!(misses.len(), 2, "{misses:?}");
        assert!(misses.iter().all(|m| !m.contains(SECRET)), "{misses:?}");
        assert_eq!(play.unused(), 0);
    }

    #[test]
    fn a_replayed_request_matches_whatever_secret_the_test_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Cassette::record(dir.path()).expect("record");
        keep(
            &rec,
            &request(&format!("https://h/x?key={SECRET}"), None),
            Ok(response(b"ok")),
        );
        rec.finish().expect("finish");
        drop(rec);
        let play = Cassette::replay(dir.path()).expect("replay");
        let mut other = request("https://h/x?key=another_secret_value", None);
        other.redactor = Redactor::new(["another_secret_value"]);
        let got = play.answer(&other).expect("replay mode").expect("matched");
        assert_eq!(got.body, b"ok");
    }

    #[test]
    fn a_broken_cassette_names_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            "{\"method\":\"GET\",\"url\":\"https://h/\",\"status\":200,\"headers\":[],\"body\":\"\"}\nnot json\n",
        )
        .expect("write");
        let err = Cassette::replay(dir.path()).expect_err("line 2 is broken");
        assert!(err.to_string().contains("line 2"), "{err}");
        let missing = Cassette::replay(&dir.path().join("absent")).expect_err("no file");
        assert!(missing.to_string().contains(FILE_NAME), "{missing}");
    }

    /// Found from outside: a secret inside a binary body, percent-encoded as JavaScript's
    /// `encodeURIComponent` does or in a form body, was written in clear.
    #[test]
    fn secrets_in_binary_bodies_and_any_percent_encoding_are_masked() {
        const ODD: &str = "p@ss/w+rd=Q&x%41y!~zz";
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Cassette::record(dir.path()).expect("record");
        let mut binary = b"\xff\x00".to_vec();
        binary.extend_from_slice(SECRET.as_bytes());
        binary.push(0x80);
        let redactor = Redactor::new([SECRET, ODD]);
        let with = |mut r: OutboundRequest| {
            r.redactor = redactor.clone();
            r
        };
        let post = with(request("https://h/pb", Some(&binary)));
        keep(&rec, &post, Ok(response(&binary)));
        let js = with(request(
            "https://h/jsq?token=p%40ss%2Fw%2Brd%3DQ%26x%2541y!~zz&page=2",
            None,
        ));
        keep(&rec, &js, Ok(response(b"ok")));
        let form = with(request(
            "https://h/token",
            Some(b"grant=x&client_secret=p@ss%2Fw%2Brd%3DQ%26x%2541y!~zz"),
        ));
        keep(&rec, &form, Ok(response(b"ok")));
        rec.finish().expect("finish");
        drop(rec);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        let b64 = base64::engine::general_purpose::STANDARD;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            for field in ["request_body", "body"] {
                if let Some(enc) = v[field]["base64"].as_str() {
                    let raw = b64.decode(enc).expect("base64");
                    assert!(
                        memchr::memmem::find(&raw, SECRET.as_bytes()).is_none(),
                        "{line}"
                    );
                }
            }
        }
        assert!(!text.contains("p%40ss") && !text.contains("p@ss"), "{text}");
        assert!(text.contains("page=2"), "other parameters kept: {text}");
        // Replay masks the live request the same way, so it still matches.
        let play = Cassette::replay(dir.path()).expect("replay");
        for r in [&post, &js, &form] {
            assert!(matches!(play.answer(r), Some(Ok(_))), "{}", r.url);
        }
    }

    #[test]
    fn a_compressed_answer_is_refused_not_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Cassette::record(dir.path()).expect("record");
        let mut gz = response(b"\x1f\x8b...");
        gz.headers.push(("content-encoding".into(), "gzip".into()));
        keep(&rec, &request("https://h/gz", None), Ok(gz));
        assert_eq!(rec.len(), 0);
        assert_eq!(rec.refused().len(), 1, "{:?}", rec.refused());
    }

    /// Found from outside: `--record` wrote through a symlink, and a failed recording
    /// replaced a good cassette.
    #[test]
    fn recording_replaces_only_when_finished_and_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "IMPORTANT").expect("write");
        let cas = dir.path().join("cas");
        std::fs::create_dir(&cas).expect("mkdir");
        std::os::unix::fs::symlink(&victim, cas.join(FILE_NAME)).expect("symlink");
        let rec = Cassette::record(&cas).expect("record");
        keep(&rec, &request("https://h/a", None), Ok(response(b"ok")));
        drop(rec); // not finished: discarded
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "IMPORTANT");
        assert!(
            cas.join(FILE_NAME).is_symlink(),
            "the old entry is untouched"
        );
        let rec = Cassette::record(&cas).expect("record");
        keep(&rec, &request("https://h/a", None), Ok(response(b"ok")));
        rec.finish().expect("finish");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "IMPORTANT");
        assert!(!cas.join(FILE_NAME).is_symlink());
        assert_eq!(
            std::fs::read_dir(&cas).expect("ls").count(),
            1,
            "no temporary file left"
        );
    }

    /// Found from outside: 31 million headers in a 248 MB file took 10 GB to parse.
    #[test]
    fn a_hand_edited_cassette_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let headers = vec![("a", "b"); MAX_HEADERS + 1];
        let line = serde_json::json!({"method": "GET", "url": "https://h/", "status": 200, "headers": headers, "body": ""});
        std::fs::write(dir.path().join(FILE_NAME), line.to_string()).expect("write");
        let err = Cassette::replay(dir.path()).expect_err("too many headers");
        assert!(err.to_string().contains("headers"), "{err}");
        let both = r#"{"method":"GET","url":"https://h/","status":200,"error":"timeout"}"#;
        std::fs::write(dir.path().join(FILE_NAME), both).expect("write");
        assert!(Cassette::replay(dir.path()).is_err());
        let fifo = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(fifo.path().join(FILE_NAME)).expect("mkdir");
        let err = Cassette::replay(fifo.path()).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
