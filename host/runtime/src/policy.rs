//! Outbound capability rules: which destinations a plugin may reach.
//!
//! A request is allowed only when its URL matches a rule the plugin declares AND a rule the
//! operator allows, and every address its host resolves to is public (or of a class the
//! operator granted). Everything here is pure; `outbound` applies it on every hop.

use std::net::IpAddr;

use serde::{Serialize, Serializer};
use serde_json::Value;
use url::Url;

/// A destination pattern: `https://api.github.com`, `https://*.slack.com`,
/// `http://127.0.0.1:*`, or `*` (anything; operators only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: Option<u16>,
    any_port: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (not the apex).
    Suffix(String),
}

/// A rule in a manifest: a fixed pattern or the origin of a URL in the run's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    Pattern(HostPattern),
    /// `{config.FIELD}`: the scheme, host and port of the URL in that config field.
    ConfigField(String),
}

impl HostPattern {
    /// Parses a pattern; the wildcard `*` alone matches every destination.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self {
                scheme: None,
                host: HostMatch::Any,
                port: None,
                any_port: true,
            });
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, r)) if s == "http" || s == "https" => (Some(s.to_string()), r),
            Some((s, _)) => return Err(format!("unsupported scheme {s:?}")),
            None => return Err("expected scheme://host[:port]".into()),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            return Err("expected scheme://host[:port] with no path or user".into());
        }
        let (host, port) = split_host_port(rest)?;
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Suffix(suffix.to_string())
        } else if host.contains('*') {
            return Err("a wildcard may only be a whole leading label (*.example.com)".into());
        } else {
            HostMatch::Exact(host)
        };
        let (port, any_port) = match port {
            Some("*") => (None, true),
            Some(p) => (
                Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
                false,
            ),
            None => (None, false),
        };
        Ok(Self {
            scheme,
            host,
            port,
            any_port,
        })
    }

    /// The pattern that allows exactly the origin of `url`.
    pub fn origin_of(url: &Url) -> Result<Self, String> {
        let host = url
            .host_str()
            .ok_or("URL has no host")?
            .to_ascii_lowercase();
        Ok(Self {
            scheme: Some(url.scheme().to_string()),
            host: HostMatch::Exact(host),
            port: url.port(),
            any_port: false,
        })
    }

    /// Whether `url` matches: scheme, host and port (default ports included).
    pub fn matches(&self, url: &Url) -> bool {
        if let Some(s) = &self.scheme
            && s != url.scheme()
        {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *h == host,
            HostMatch::Suffix(s) => host.len() > s.len() + 1 && host.ends_with(&format!(".{s}")),
        };
        let port_ok = self.any_port || {
            let wanted = self.port.or_else(|| default_port(self.scheme.as_deref()));
            wanted == url.port_or_known_default()
        };
        host_ok && port_ok
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scheme.is_none() && self.host == HostMatch::Any {
            return f.write_str("*");
        }
        write!(f, "{}://", self.scheme.as_deref().unwrap_or("*"))?;
        match &self.host {
            HostMatch::Any => f.write_str("*")?,
            HostMatch::Exact(h) => f.write_str(h)?,
            HostMatch::Suffix(s) => write!(f, "*.{s}")?,
        }
        match (self.any_port, self.port) {
            (true, _) => f.write_str(":*"),
            (false, Some(p)) => write!(f, ":{p}"),
            (false, None) => Ok(()),
        }
    }
}

impl HostRule {
    /// Parses a manifest rule: a pattern or `{config.FIELD}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(field) = t.strip_prefix("{config.").and_then(|r| r.strip_suffix('}')) {
            if field.is_empty()
                || !field
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                return Err("config reference must be {config.FIELD}".into());
            }
            return Ok(Self::ConfigField(field.to_string()));
        }
        let p = HostPattern::parse(t)?;
        if p.host == HostMatch::Any {
            return Err("a plugin may not declare a wildcard host; use *.domain".into());
        }
        Ok(Self::Pattern(p))
    }

    /// The concrete pattern for one run: config references resolve against `config`.
    /// A missing or non-URL field resolves to nothing (the plugin can reach no such host).
    pub fn resolve(&self, config: &Value) -> Option<HostPattern> {
        match self {
            Self::Pattern(p) => Some(p.clone()),
            Self::ConfigField(f) => {
                let url = Url::parse(config.get(f)?.as_str()?).ok()?;
                HostPattern::origin_of(&url).ok()
            }
        }
    }
}

impl std::fmt::Display for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pattern(p) => p.fmt(f),
            Self::ConfigField(field) => write!(f, "{{config.{field}}}"),
        }
    }
}

impl Serialize for HostRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    }
}

fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in IPv6 host")?;
        return Ok((host, after.strip_prefix(':')));
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

/// Which non-public address classes the operator lets plugins reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AddressGrant {
    /// 127.0.0.0/8 and ::1 (tests and sidecars).
    pub loopback: bool,
    /// RFC 1918, unique-local and CGNAT ranges (a company's internal services).
    pub private: bool,
}

impl AddressGrant {
    /// Parses a comma list of `loopback`, `private` (or `none`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut g = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "loopback" => g.loopback = true,
                "private" => g.private = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown address class {other:?} (loopback, private, none)"
                    ));
                }
            }
        }
        Ok(g)
    }

    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_loopback() {
                    (!self.loopback).then_some("loopback")
                } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                    (!self.private).then_some("private")
                } else if v4.is_link_local() {
                    Some("link-local")
                } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0
                {
                    Some("non-routable")
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                let seg = v6.segments();
                if v6.is_loopback() {
                    (!self.loopback).then_some("loopback")
                } else if (seg[0] & 0xfe00) == 0xfc00 {
                    (!self.private).then_some("private")
                } else if (seg[0] & 0xffc0) == 0xfe80 {
                    Some("link-local")
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Some("non-routable")
                } else {
                    None
                }
            }
        }
    }
}

/// The operator's side of the outbound policy.
#[derive(Debug, Clone)]
pub struct OperatorPolicy {
    /// Destinations any plugin may reach (still intersected with what each plugin declares).
    pub allow: Vec<HostPattern>,
    pub addresses: AddressGrant,
}

impl Default for OperatorPolicy {
    fn default() -> Self {
        Self {
            allow: vec![HostPattern::parse("*").expect("static pattern")],
            addresses: AddressGrant::default(),
        }
    }
}

impl OperatorPolicy {
    /// Parses `SLUICE_ALLOWED_HOSTS`-style text: comma-separated patterns.
    pub fn parse_allow(text: &str) -> Result<Vec<HostPattern>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| HostPattern::parse(p).map_err(|e| format!("{p:?}: {e}")))
            .collect()
    }
}

/// The rules for one plugin call: its declared hosts (resolved against the config) and the operator's.
#[derive(Debug, Clone)]
pub struct Destinations {
    declared: Vec<HostPattern>,
    operator: OperatorPolicy,
}

impl Destinations {
    pub fn new(rules: &[HostRule], config: &Value, operator: OperatorPolicy) -> Self {
        Self {
            declared: rules.iter().filter_map(|r| r.resolve(config)).collect(),
            operator,
        }
    }

    /// Rules for a call that may reach nothing (e.g. `manifest`).
    pub fn none() -> Self {
        Self {
            declared: vec![],
            operator: OperatorPolicy {
                allow: vec![],
                addresses: AddressGrant::default(),
            },
        }
    }

    /// Checks a URL against both rule sets (not its addresses: see [`AddressGrant`]).
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {:?} is not allowed", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with credentials are not allowed".into());
        }
        let origin = origin(url);
        if !self.declared.iter().any(|p| p.matches(url)) {
            return Err(format!("{origin} is not declared by the plugin"));
        }
        if !self.operator.allow.iter().any(|p| p.matches(url)) {
            return Err(format!("{origin} is not allowed by the operator"));
        }
        Ok(())
    }

    pub fn addresses(&self) -> AddressGrant {
        self.operator.addresses
    }
}

/// `scheme://host:port` of a URL, for messages.
pub fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn u(s: &str) -> Url {
        Url::parse(s).expect("test url")
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let p = HostPattern::parse("https://api.github.com").unwrap();
        assert!(p.matches(&u("https://api.github.com/user")));
        assert!(p.matches(&u("https://API.github.com:443/x")));
        assert!(!p.matches(&u("http://api.github.com/user")));
        assert!(!p.matches(&u("https://api.github.com:8443/user")));
        assert!(!p.matches(&u("https://api.github.com.evil.com/")));
        let w = HostPattern::parse("https://*.slack.com").unwrap();
        assert!(w.matches(&u("https://acme.slack.com/api")));
        assert!(!w.matches(&u("https://slack.com/api")));
        assert!(!w.matches(&u("https://evilslack.com/api")));
        let any_port = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(any_port.matches(&u("http://127.0.0.1:9999/")));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://a.*.com").is_err());
    }

    #[test]
    fn config_rules_resolve_to_the_origin() {
        let r = HostRule::parse("{config.api_url}").unwrap();
        let p = r
            .resolve(&json!({"api_url": "http://127.0.0.1:8080/api/v3"}))
            .unwrap();
        assert!(p.matches(&u("http://127.0.0.1:8080/other")));
        assert!(!p.matches(&u("http://127.0.0.1:8081/other")));
        assert!(r.resolve(&json!({})).is_none());
        assert!(HostRule::parse("*").is_err());
    }

    #[test]
    fn both_sides_must_allow() {
        let rules = [HostRule::parse("https://api.example.com").unwrap()];
        let op = OperatorPolicy {
            allow: OperatorPolicy::parse_allow("https://*.example.com").unwrap(),
            ..Default::default()
        };
        let d = Destinations::new(&rules, &json!({}), op);
        assert!(d.check_url(&u("https://api.example.com/x")).is_ok());
        assert!(
            d.check_url(&u("https://other.example.com/x"))
                .unwrap_err()
                .contains("not declared")
        );
        let op = OperatorPolicy {
            allow: OperatorPolicy::parse_allow("https://api.github.com").unwrap(),
            ..Default::default()
        };
        let d = Destinations::new(&rules, &json!({}), op);
        assert!(
            d.check_url(&u("https://api.example.com/x"))
                .unwrap_err()
                .contains("operator")
        );
    }

    #[test]
    fn private_addresses_need_a_grant() {
        let none = AddressGrant::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(none.refuses(ip.parse().unwrap()).is_some(), "{ip}");
        }
        assert!(none.refuses("140.82.112.5".parse().unwrap()).is_none());
        let lo = AddressGrant::parse("loopback").unwrap();
        assert!(lo.refuses("127.0.0.1".parse().unwrap()).is_none());
        assert!(lo.refuses("10.0.0.1".parse().unwrap()).is_some());
        assert!(lo.refuses("169.254.169.254".parse().unwrap()).is_some());
    }
}
