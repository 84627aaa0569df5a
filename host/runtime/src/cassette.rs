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
//! or, for a transport failure, `{"method":…,"url":…,"error":{"timeout":null}}`. Bodies are
//! a JSON string when they are UTF-8, else `{"base64":"…"}`.
//!
//! Secrets: secret headers are never written (no request header is); every secret value of the
//! call, in each form [`Redactor`] knows (raw, JSON, percent, base64), is replaced by
//! [`MASK`](crate::redact::MASK) in the URL, the request body, the response headers and a UTF-8
//! response body; `set-cookie` answers are dropped. Replay masks the live request the same way
//! before matching, so it matches whatever secret value the test passes.
//!
//! Matching: method, masked URL and masked request body, exactly. Each recorded exchange
//! answers once, in recorded order per request (two identical GETs recorded twice replay twice).
//! A request with no exchange left is refused with
//! [`OutboundError::Denied`]`("not in the cassette: …")` and kept in [`Cassette::misses`].

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use crate::redact::{Redactor, loggable_url};

/// The file a cassette directory holds.
pub const FILE_NAME: &str = "cassette.jsonl";

/// Largest cassette file read for replay (a cassette is a test fixture, not a data dump).
pub const MAX_CASSETTE_BYTES: u64 = 256 << 20;

/// Why a cassette could not be opened.
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
}

/// A body as stored: text when it is UTF-8 (readable and diffable), base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    Binary { base64: String },
}

impl Body {
    fn of(bytes: &[u8], redactor: &Redactor) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(redactor.redact(text).into_owned()),
            Err(_) => Body::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
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

/// A transport failure as stored (the variants of [`OutboundError`] an upstream can cause).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Failure {
    Timeout,
    Connection(String),
    TooLarge(u64),
}

/// What the plugin got: an answer or a transport failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Outcome {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
    },
    Failed {
        error: Failure,
    },
}

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Exchange {
    method: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_body: Option<Body>,
    #[serde(flatten)]
    outcome: Outcome,
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
            url: req.redactor.redact(req.url.as_str()).into_owned(),
            body: req.body.as_deref().map(|b| Body::of(b, &req.redactor)),
        }
    }
}

enum Tape {
    Record(std::fs::File),
    Replay(HashMap<Key, VecDeque<Outcome>>),
}

/// A cassette in record or replay mode; shared by every call of the process.
pub struct Cassette {
    path: PathBuf,
    tape: Mutex<Tape>,
    misses: Mutex<Vec<String>>,
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

impl Cassette {
    /// Starts recording into `dir/cassette.jsonl` (the directory is created; an existing
    /// cassette is replaced).
    pub fn record(dir: &Path) -> Result<Cassette, CassetteError> {
        let path = dir.join(FILE_NAME);
        let io = |source| CassetteError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::File::create(&path).map_err(io)?;
        Ok(Cassette {
            path,
            tape: Mutex::new(Tape::Record(file)),
            misses: Mutex::default(),
            recorded: Mutex::new(0),
        })
    }

    /// Opens `dir/cassette.jsonl` for replay.
    pub fn replay(dir: &Path) -> Result<Cassette, CassetteError> {
        let path = dir.join(FILE_NAME);
        let io = |source| CassetteError::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(io)?;
        if !meta.is_file() || meta.len() > MAX_CASSETTE_BYTES {
            return Err(CassetteError::TooLarge { path });
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let mut tape: HashMap<Key, VecDeque<Outcome>> = HashMap::new();
        let mut count = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parse = |why: String| CassetteError::Parse {
                path: path.clone(),
                line: i + 1,
                why,
            };
            let ex: Exchange = serde_json::from_str(line).map_err(|e| parse(e.to_string()))?;
            if let Outcome::Response { body, .. } = &ex.outcome {
                body.clone().into_bytes().map_err(parse)?;
            }
            let key = Key {
                method: ex.method,
                url: ex.url,
                body: ex.request_body,
            };
            tape.entry(key).or_default().push_back(ex.outcome);
            count += 1;
        }
        Ok(Cassette {
            path,
            tape: Mutex::new(Tape::Replay(tape)),
            misses: Mutex::default(),
            recorded: Mutex::new(count),
        })
    }

    /// The cassette file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this cassette records (else it replays).
    pub fn is_recording(&self) -> bool {
        matches!(
            *self.tape.lock().unwrap_or_else(|p| p.into_inner()),
            Tape::Record(_)
        )
    }

    /// Exchanges written so far (record) or read from the file (replay).
    pub fn len(&self) -> usize {
        *self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the cassette holds no exchange.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests replay could not answer (`METHOD url`, secrets masked), in order.
    pub fn misses(&self) -> Vec<String> {
        self.misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Exchanges recorded but never asked for during replay (0 when recording).
    pub fn unused(&self) -> usize {
        match &*self.tape.lock().unwrap_or_else(|p| p.into_inner()) {
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
        let mut tape = self.tape.lock().unwrap_or_else(|p| p.into_inner());
        let Tape::Replay(tape) = &mut *tape else {
            return None;
        };
        let Some(outcome) = tape.get_mut(&key).and_then(VecDeque::pop_front) else {
            let what = format!("{} {}", key.method, loggable_url(&req.url, &req.redactor));
            self.misses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what.clone());
            return Some(Err(OutboundError::Denied(format!(
                "not in the cassette {}: {what}",
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
            Outcome::Failed { error } => Err(match error {
                Failure::Timeout => OutboundError::Timeout,
                Failure::Connection(why) => OutboundError::Connection(why),
                Failure::TooLarge(n) => OutboundError::TooLarge(n),
            }),
        })
    }

    /// When recording, appends what `req` got (a denial or a cancel is not the upstream's
    /// answer and is not recorded). Write errors are logged: a test then fails on replay.
    pub(crate) fn keep(
        &self,
        key: Key,
        redactor: &Redactor,
        result: &Result<OutboundResponse, OutboundError>,
    ) {
        let outcome = match result {
            Ok(r) => Outcome::Response {
                status: r.status,
                headers: r
                    .headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("set-cookie"))
                    .map(|(name, value)| (name.clone(), redactor.redact(value).into_owned()))
                    .collect(),
                body: Body::of(&r.body, redactor),
            },
            Err(OutboundError::Timeout) => Outcome::Failed {
                error: Failure::Timeout,
            },
            Err(OutboundError::Connection(why)) => Outcome::Failed {
                error: Failure::Connection(redactor.redact(why).into_owned()),
            },
            Err(OutboundError::TooLarge(n)) => Outcome::Failed {
                error: Failure::TooLarge(*n),
            },
            Err(
                OutboundError::Denied(_)
                | OutboundError::InvalidRequest(_)
                | OutboundError::Cancelled,
            ) => {
                return;
            }
        };
        let line = Exchange {
            method: key.method,
            url: key.url,
            request_body: key.body,
            outcome,
        };
        let mut tape = self.tape.lock().unwrap_or_else(|p| p.into_inner());
        let Tape::Record(file) = &mut *tape else {
            return;
        };
        let written = serde_json::to_string(&line)
            .map_err(std::io::Error::other)
            .and_then(|text| writeln!(file, "{text}"))
            .and_then(|()| file.flush());
        match written {
            Ok(()) => *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) += 1,
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
}
