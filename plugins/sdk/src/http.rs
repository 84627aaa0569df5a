//! Outbound HTTP through the host's `http.fetch`.
//!
//! The host checks the destination against the manifest's `hosts`, follows redirects, retries
//! idempotent requests, waits out rate limits and caps sizes: a connector just sends requests.
//!
//! ```ignore
//! let page = Request::get("https://api.example.com/items")
//!     .query("limit", "100")
//!     .bearer_secret("api_token")
//!     .send()?
//!     .error_for_status()?;
//! let items: Vec<Value> = page.json()?;
//! let next = page.next_link();
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::sluice::connector::http as raw;
use crate::error::{ConnectorError, Result};

pub use raw::{HttpError, Method, SecretHeader};

/// A request being built; [`Request::send`] hands it to the host.
#[derive(Debug, Clone)]
pub struct Request {
    raw: raw::Request,
    /// A builder step that failed (e.g. a body that does not serialize), reported by `send`.
    error: Option<String>,
}

impl Request {
    /// A request with `method` to an absolute `http://` or `https://` URL.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            raw: raw::Request {
                method,
                url: url.into(),
                headers: Vec::new(),
                body: None,
                secret_headers: Vec::new(),
                idempotent: false,
            },
            error: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Self {
        Self::new(Method::Head, url)
    }

    /// A `POST` request (not retried unless marked [`idempotent`](Self::idempotent)).
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A `PATCH` request (not retried unless marked [`idempotent`](Self::idempotent)).
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new(Method::Patch, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// The URL as built so far.
    pub fn url(&self) -> &str {
        &self.raw.url
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.raw.headers.push((name.into(), value.into()));
        self
    }

    /// Appends a percent-encoded query parameter to the URL.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        let (base, fragment) = match self.raw.url.find('#') {
            Some(i) => self.raw.url.split_at(i),
            None => (self.raw.url.as_str(), ""),
        };
        let sep = if !base.contains('?') {
            "?"
        } else if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        };
        self.raw.url = format!(
            "{base}{sep}{}={}{fragment}",
            percent_encode(name),
            percent_encode(value)
        );
        self
    }

    /// Asks the host to put the secret `secret` into header `header`, after `prefix`.
    /// The value never enters the plugin.
    pub fn secret_header(
        mut self,
        header: impl Into<String>,
        secret: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        self.raw.secret_headers.push(SecretHeader {
            header: header.into(),
            secret: secret.into(),
            prefix: prefix.into(),
        });
        self
    }

    /// `Authorization: Bearer <secret>`, injected by the host (see [`secret_header`](Self::secret_header)).
    pub fn bearer_secret(self, secret: impl Into<String>) -> Self {
        self.secret_header("authorization", secret, "Bearer ")
    }

    /// Sets a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.raw.body = Some(body.into());
        self
    }

    /// Sets a JSON body and, unless already set, `content-type: application/json`.
    pub fn json_body<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.raw.body = Some(body);
                if !self
                    .raw
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    self.raw
                        .headers
                        .push(("content-type".into(), "application/json".into()));
                }
            }
            Err(e) => self.error = Some(format!("body does not serialize: {e}")),
        }
        self
    }

    /// Marks the request safe to send again after a failure (e.g. a POST that only reads, like
    /// a GraphQL query). GET, HEAD, PUT and DELETE always are.
    pub fn idempotent(mut self) -> Self {
        self.raw.idempotent = true;
        self
    }

    /// Sends the request. A non-2xx status is a [`Response`], not an error: see
    /// [`Response::error_for_status`].
    pub fn send(self) -> core::result::Result<Response, HttpError> {
        if let Some(e) = self.error {
            return Err(HttpError::InvalidRequest(e));
        }
        let raw::Response {
            status,
            headers,
            body,
        } = raw::fetch(&self.raw)?;
        Ok(Response {
            status,
            headers,
            body,
            url: self.raw.url,
        })
    }
}

/// A response (after the host's redirects, retries and rate-limit waits).
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The headers; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The URL that was requested (before any redirect); relative links resolve against it.
    pub url: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body deserialized from JSON; an `internal` error (an unexpected answer of the
    /// upstream) if it does not fit `T`, naming the URL (no query) and the content type, e.g.
    /// `the upstream's answer to https://h/x is not the JSON expected (content-type
    /// text/html): expected value at line 1 column 1`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let content_type = self.header("content-type").unwrap_or("none");
            ConnectorError::internal(format!(
                "the upstream's answer to {} is not the JSON expected (content-type {}): {e}",
                redact(&self.url),
                one_line(content_type, 80)
            ))
        })
    }

    /// The `rel="next"` target of the `Link` headers, resolved against [`Response::url`].
    pub fn next_link(&self) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
            .find_map(|(_, v)| find_link(v, "next"))
            .map(|target| resolve_url(&self.url, &target))
    }

    /// `Ok(self)` for a 2xx status, else the error [`ConnectorError::from_status`] maps it to
    /// (401 `invalid-credentials`, 403 `insufficient-scope`, 404 `invalid-config`,
    /// 429 `rate-limited`, 5xx `unreachable`, other `internal`).
    pub fn error_for_status(self) -> Result<Self> {
        if self.is_success() {
            return Ok(self);
        }
        Err(ConnectorError::from_status(
            self.status,
            format!("{}: HTTP {}", redact(&self.url), self.status),
        ))
    }
}

/// The target of the first link with relation `rel` in a `Link` header value (RFC 8288),
/// e.g. `<https://api.example.com/items?page=2>; rel="next"`. Not resolved.
pub fn find_link(header: &str, rel: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        rest = &rest[end + 1..];
        // Parameters run to the next link (a comma outside quotes) or the end.
        let mut in_quotes = false;
        let params_end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    in_quotes = !in_quotes;
                }
                c == ',' && !in_quotes
            })
            .map_or(rest.len(), |(i, _)| i);
        let params = &rest[..params_end];
        let matches = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
        });
        if matches {
            return Some(target.trim().to_string());
        }
        rest = &rest[params_end..];
    }
}

/// Resolves a URL reference against an absolute base URL (RFC 3986, section 5.2).
pub fn resolve_url(base: &str, reference: &str) -> String {
    let reference = reference.trim();
    if has_scheme(reference) {
        return reference.to_string();
    }
    let base = base.split('#').next().unwrap_or(base);
    let (scheme, after_scheme) = base.split_once("://").unwrap_or(("", base));
    if let Some(rest) = reference.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let origin = &base[..base.len() - after_scheme.len() + authority_end];
    let path_and_query = &after_scheme[authority_end..];
    let (base_path, _) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if reference.is_empty() {
        return base.to_string();
    }
    if reference.starts_with('#') || reference.starts_with('?') {
        let base_no_query = &base[..base.len() - path_and_query.len() + base_path.len()];
        if reference.starts_with('#') {
            return format!("{base}{reference}");
        }
        return format!("{base_no_query}{reference}");
    }
    let (ref_path, ref_tail) = match reference.find(['?', '#']) {
        Some(i) => reference.split_at(i),
        None => (reference, ""),
    };
    let merged = if ref_path.starts_with('/') {
        ref_path.to_string()
    } else {
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        format!("{dir}{ref_path}")
    };
    format!("{origin}{}{ref_tail}", remove_dot_segments(&merged))
}

fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Checks a configured base URL (`field` names the config field, e.g. `base_url`): an
/// `http://` or `https://` URL with a host and no userinfo, query or fragment — a base is
/// joined with paths, so `https://h/?key=…` or `https://h/x#f` would build wrong URLs, and a
/// credential belongs in a secret. The message quotes the URL only up to the offending part,
/// so a key in a query never reaches an error.
pub fn check_base_url(field: &str, url: &str) -> Result<()> {
    let invalid = |why: String| Err(ConnectorError::invalid_config(format!("{field}: {why}")));
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        let shown: String = url.chars().take(12).collect();
        return invalid(format!(
            "must be an http:// or https:// URL (it starts {shown:?})"
        ));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return invalid(
            "must not carry credentials (user:password@): give them as the connector's secret"
                .into(),
        );
    }
    if authority.is_empty() {
        return invalid("has no host".into());
    }
    if let Some(i) = url.find(['?', '#']) {
        let (what, hint) = if url[i..].starts_with('?') {
            (
                "a query",
                "a credential belongs in the connector's secret, other parameters in the paths",
            )
        } else {
            ("a fragment", "a fragment is never sent to a server")
        };
        return invalid(format!(
            "must not have {what} ({:?} is followed by {:?}…): it is joined with paths, \
             which would build wrong URLs; {hint}",
            &url[..i],
            &url[i..i + 1]
        ));
    }
    Ok(())
}

/// The origin (`scheme://host[:port]`, lowercase scheme and host, default port left out) of an
/// absolute URL, without userinfo; `None` when `url` is not absolute `http(s)`.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.is_empty() {
        return None;
    }
    let mut host_port = host_port.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    if let Some(stripped) = host_port.strip_suffix(default) {
        host_port = stripped.to_string();
    }
    Some(format!("{scheme}://{host_port}"))
}

/// `s` on one line, at most `max` characters (an upstream's header may hold anything).
fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// The URL without userinfo, query and fragment: safe to put in an error message.
pub fn redact(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
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
    fn base_urls_with_a_query_fragment_or_credentials_are_refused() {
        assert!(check_base_url("base_url", "https://h.example/api").is_ok());
        assert!(check_base_url("base_url", "http://h:9711/").is_ok());
        let q = check_base_url("base_url", "http://h:9711/?apikey=s3cret").unwrap_err();
        assert!(q.message.contains("must not have a query"), "{}", q.message);
        assert!(!q.message.contains("s3cret"), "{}", q.message);
        let f = check_base_url("api_url", "http://h:9711/x#frag").unwrap_err();
        assert!(
            f.message.starts_with("api_url: must not have a fragment"),
            "{}",
            f.message
        );
        let u = check_base_url("base_url", "https://me:pw@h/").unwrap_err();
        assert!(!u.message.contains("pw"), "{}", u.message);
        assert!(check_base_url("base_url", "ftp://h").is_err());
        assert!(check_base_url("base_url", "https:///x").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("HTTPS://H.example:443/a?b").as_deref(),
            Some("https://h.example")
        );
        assert_eq!(
            origin("http://u:p@h:9711/x").as_deref(),
            Some("http://h:9711")
        );
        assert_eq!(origin("ftp://h/"), None);
        assert_eq!(origin("/relative"), None);
    }

    #[test]
    fn links() {
        let h =
            r#"<https://a.example/x?page=1>; rel="prev", <https://a.example/x?page=3>; rel="next""#;
        assert_eq!(
            find_link(h, "next").as_deref(),
            Some("https://a.example/x?page=3")
        );
        assert_eq!(
            find_link(r#"</p?a=1,2>; title="a, b"; rel="last next""#, "next").as_deref(),
            Some("/p?a=1,2")
        );
        assert_eq!(find_link(r#"<x>; rel="prev""#, "next"), None);
    }

    #[test]
    fn resolve() {
        let b = "https://h.example/api/items?page=1";
        assert_eq!(resolve_url(b, "https://o.example/z"), "https://o.example/z");
        assert_eq!(resolve_url(b, "//o.example/z"), "https://o.example/z");
        assert_eq!(resolve_url(b, "/v2/x?p=2"), "https://h.example/v2/x?p=2");
        assert_eq!(
            resolve_url(b, "?page=2"),
            "https://h.example/api/items?page=2"
        );
        assert_eq!(resolve_url(b, "more?p=2"), "https://h.example/api/more?p=2");
        assert_eq!(resolve_url(b, "../x"), "https://h.example/x");
        assert_eq!(resolve_url("https://h.example", "x"), "https://h.example/x");
        assert_eq!(
            redact("https://u:p@h.example/a?token=x"),
            "https://h.example/a"
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
