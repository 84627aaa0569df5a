//! Fake upstreams for connector tests: local HTTP servers that reproduce what the real APIs do
//! (auth failures in each API's own shape, pagination, rate-limit headers and answers, 5xx
//! under load) over deterministic data sets generated from a seed and a size.
//!
//! Each fake is started with a config and returns a handle with its base URL, the data it
//! serves (the expected result of a sync), request counters, and [`Knobs`] that inject
//! failures while it runs. Connectors know nothing about them: they are pointed at the
//! handle's URL through their `api_url` config.

pub mod github;
pub mod hubspot;
pub mod internal_service;
pub mod linear;
pub mod openapi;
pub mod slack;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A small deterministic PRNG (SplitMix64): the same seed gives the same data set.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for epoch seconds (GitHub's format).
pub fn iso(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 {
        yoe + era * 400 + 1
    } else {
        yoe + era * 400
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Epoch seconds of `YYYY-MM-DDTHH:MM:SSZ` (fractional seconds ignored), the format GitHub
/// documents for `since`; `None` for anything else.
pub fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || !s.is_ascii()
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || !(b[19] == b'Z' || b[19] == b'.')
        || !s.ends_with('Z')
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, h, mi, sec) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Failure injection and pacing, read on every request; change them while the fake serves.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Every Nth request (counting all requests) answers 502 (0: never).
    pub fail_every: AtomicU64,
    /// Every Nth request answers a rate-limit response in the API's own shape (0: never).
    pub rate_limit_every: AtomicU64,
    /// `Retry-After` seconds of injected rate-limit answers that carry one.
    pub retry_after_secs: AtomicU64,
    /// Every request is rate limited, with a reset an hour away (the quota is spent).
    pub exhausted: AtomicBool,
    /// Delay before answering each request, in milliseconds.
    pub latency_ms: AtomicU64,
}

impl Knobs {
    pub fn set_fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::SeqCst);
    }

    pub fn set_rate_limit_every(&self, n: u64) {
        self.rate_limit_every.store(n, Ordering::SeqCst);
    }

    pub fn set_retry_after_secs(&self, n: u64) {
        self.retry_after_secs.store(n, Ordering::SeqCst);
    }

    pub fn set_exhausted(&self, on: bool) {
        self.exhausted.store(on, Ordering::SeqCst);
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// What request number `n` (1-based) should get, after the configured latency.
    pub(crate) async fn decide(&self, n: u64) -> Injected {
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let every = |a: &AtomicU64| {
            let k = a.load(Ordering::SeqCst);
            k > 0 && n.is_multiple_of(k)
        };
        if self.exhausted.load(Ordering::SeqCst) {
            Injected::Exhausted
        } else if every(&self.fail_every) {
            Injected::BadGateway
        } else if every(&self.rate_limit_every) {
            Injected::RateLimited
        } else {
            Injected::None
        }
    }
}

/// What [`Knobs::decide`] injects into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    None,
    BadGateway,
    RateLimited,
    Exhausted,
}

/// Request counters of a fake.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every request received, answered or not.
    pub requests: AtomicU64,
    /// Injected 502s served.
    pub bad_gateways: AtomicU64,
    /// Rate-limit answers served (injected or exhausted).
    pub rate_limited: AtomicU64,
    /// Auth failures served (bad or missing token).
    pub unauthorized: AtomicU64,
    routes: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// Counts a request and returns its number (1-based).
    pub(crate) fn next(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn route(&self, route: &str) {
        if let Ok(mut r) = self.routes.lock() {
            *r.entry(route.to_string()).or_default() += 1;
        }
    }

    /// Requests answered normally per route (e.g. `issues`, `conversations.history`).
    pub fn by_route(&self) -> BTreeMap<String, u64> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Requests answered normally on one route.
    pub fn on(&self, route: &str) -> u64 {
        self.by_route().get(route).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A listener on 127.0.0.1 (an ephemeral port) and its address.
pub(crate) async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake upstream");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `router` on `listener` until the returned task is aborted.
pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}

/// Parameters of a query string or form body, in order, percent-decoded.
pub(crate) fn query(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub(crate) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first non-empty value of a parameter.
pub(crate) fn get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip_and_rng() {
        assert_eq!(iso(1_709_209_805), "2024-02-29T12:30:05Z");
        assert_eq!(parse_iso("2024-02-29T12:30:05Z"), Some(1_709_209_805));
        assert_eq!(parse_iso("2024-02-29T12:30:05.123Z"), Some(1_709_209_805));
        assert_eq!(parse_iso("2024-02-29"), None);
        assert_eq!(decode("2024-01-01T00%3A00%3A00Z"), "2024-01-01T00:00:00Z");
        assert_eq!(decode("a+b%zz%4"), "a b%zz%4");
        assert_eq!(
            query("a=1&b=&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into())
            ]
        );
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((a.next_u64(), a.below(10)), (b.next_u64(), b.below(10)));
    }
}
