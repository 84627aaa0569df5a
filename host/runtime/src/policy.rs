//! Outbound capability rules: which destinations a plugin may reach.
//!
//! A request is allowed only when its URL matches a rule the plugin declares AND a rule the
//! operator allows, and every address its host resolves to is public (or of a class the
//! operator granted). Everything here is pure; `outbound` applies it on every hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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
    /// 127.0.0.0/8 and ::1 (tests and sidecars), and IPv6 forms embedding 127.0.0.0/8.
    pub loopback: bool,
    /// RFC 1918, unique-local, site-local and CGNAT ranges (a company's internal services), and
    /// IPv6 forms embedding the IPv4 ones.
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

    /// Why `ip` may not be reached (`loopback`, `private`, `link-local`, `non-routable`), or
    /// `None` when it may. See `classify_v4` and `classify_v6` for the ranges; an IPv6
    /// address that carries an IPv4 address (`embedded_ipv4`) is judged by that IPv4 address.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        match ip {
            IpAddr::V4(v4) => self.refuses_class(classify_v4(v4)),
            IpAddr::V6(v6) => match classify_v6(v6) {
                Some(class) => self.refuses_class(Some(class)),
                None => embedded_ipv4(v6)
                    .into_iter()
                    .find_map(|v4| self.refuses_class(classify_v4(v4))),
            },
        }
    }

    fn refuses_class(&self, class: Option<Class>) -> Option<&'static str> {
        let class = class?;
        let granted = match class {
            Class::Loopback => self.loopback,
            Class::Private => self.private,
            Class::LinkLocal | Class::NonRoutable => false,
        };
        (!granted).then_some(class.name())
    }
}

/// The class of an address that is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Reachable with the `loopback` grant.
    Loopback,
    /// Reachable with the `private` grant.
    Private,
    /// Never reachable (cloud metadata lives here).
    LinkLocal,
    /// Never reachable: not a destination at all, or one that no public host can have.
    NonRoutable,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::NonRoutable => "non-routable",
        }
    }
}

/// The class of an IPv4 address, `None` when it is public.
///
/// - `127.0.0.0/8` loopback (RFC 1122);
/// - `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918) and `100.64.0.0/10` (CGNAT,
///   RFC 6598) private;
/// - `169.254.0.0/16` link-local (RFC 3927);
/// - non-routable: `0.0.0.0/8` ("this network", RFC 1122; `0.0.0.0` reaches the local host),
///   multicast `224.0.0.0/4` (RFC 5771), reserved `240.0.0.0/4` with the broadcast address
///   (RFC 1112), and the documentation ranges `192.0.2.0/24`, `198.51.100.0/24`,
///   `203.0.113.0/24` (RFC 5737), which no public host has.
fn classify_v4(v4: Ipv4Addr) -> Option<Class> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some(Class::Loopback)
    } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        Some(Class::Private)
    } else if v4.is_link_local() {
        Some(Class::LinkLocal)
    } else if o[0] == 0 || v4.is_multicast() || o[0] >= 240 || v4.is_documentation() {
        Some(Class::NonRoutable)
    } else {
        None
    }
}

/// The class of an IPv6 address by its own range, `None` when the range is public or one that
/// carries an IPv4 address (then `embedded_ipv4` decides).
///
/// - `::1` loopback (RFC 4291);
/// - `fc00::/7` unique-local (RFC 4193) and the deprecated site-local `fec0::/10` (RFC 3879,
///   still routed inside some sites) private;
/// - `fe80::/10` link-local (RFC 4291);
/// - non-routable, never a destination of a public host: unspecified `::` (RFC 4291; a
///   connection to it reaches the local host), multicast `ff00::/8` (RFC 4291), discard-only
///   `100::/64` (RFC 6666), documentation `2001:db8::/32` (RFC 3849) and `3fff::/20`
///   (RFC 9637).
///
/// Not classified (public unless they resolve elsewhere): the rest of `2001::/23` (IETF
/// protocol assignments, some of them global anycast), ISATAP interface identifiers
/// (`…:5efe:a.b.c.d`, RFC 5214) and 6rd prefixes (RFC 5969), whose IPv4 addresses matter only
/// inside the site or provider that owns the prefix, which routes them.
fn classify_v6(v6: Ipv6Addr) -> Option<Class> {
    let seg = v6.segments();
    if v6.is_loopback() {
        Some(Class::Loopback)
    } else if (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfec0 {
        Some(Class::Private)
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Some(Class::LinkLocal)
    } else if v6.is_unspecified()
        || v6.is_multicast()
        || seg[..4] == [0x100, 0, 0, 0]
        || seg[..2] == [0x2001, 0xdb8]
        || (seg[0] == 0x3fff && seg[1] < 0x1000)
    {
        Some(Class::NonRoutable)
    } else {
        None
    }
}

/// The IPv4 addresses an IPv6 address carries, which decide whether it may be reached: a packet
/// to such an address ends up at that IPv4 address (through the local stack, a NAT64 gateway, a
/// 6to4 relay or a Teredo relay), so `64:ff9b::a9fe:a9fe` must be refused like `169.254.169.254`.
///
/// - IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2) and IPv4-translated `::ffff:0:a.b.c.d`
///   (RFC 2765 §2.1): the last 32 bits;
/// - IPv4-compatible `::a.b.c.d` (RFC 4291 §2.5.5.1, deprecated): the last 32 bits (`::` and
///   `::1` are classified before, as unspecified and loopback);
/// - NAT64 well-known prefix `64:ff9b::/96` (RFC 6052): the last 32 bits;
/// - NAT64 local-use prefix `64:ff9b:1::/48` (RFC 8215): the operator chooses a prefix length
///   from /48 to /96, which moves the IPv4 address (RFC 6052 §2.2). An address whose bits 48–95
///   are zero is read as the usual /96 form (last 32 bits); any other address of the block gives
///   `0.0.0.0`, i.e. is refused as non-routable, because its IPv4 address cannot be located;
/// - 6to4 `2002::/16` (RFC 3056): bits 16–47;
/// - Teredo `2001::/32` (RFC 4380 §4): both the server (bits 32–63) and the client (the last
///   32 bits, inverted); the address is refused if either is.
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(v6);
    let seg = v6.segments();
    let last = Ipv4Addr::from(bits as u32);
    match seg {
        // IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64 (well-known; local-use as /96).
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 1, 0, 0, 0, _, _] => vec![last],
        [0x64, 0xff9b, 1, ..] => vec![Ipv4Addr::UNSPECIFIED],
        [0x2002, ..] => vec![Ipv4Addr::from((bits >> 80) as u32)],
        [0x2001, 0, ..] => vec![
            Ipv4Addr::from(!(bits as u32)),
            Ipv4Addr::from((bits >> 64) as u32),
        ],
        _ => vec![],
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
    /// Who sends the requests, for metrics: the plugin id, or [`Destinations::HOST_LABEL`].
    label: Arc<str>,
}

impl Destinations {
    /// The metrics label of requests the host itself sends (internal services).
    pub const HOST_LABEL: &str = "_host";

    pub fn new(rules: &[HostRule], config: &Value, operator: OperatorPolicy) -> Self {
        Self {
            declared: rules.iter().filter_map(|r| r.resolve(config)).collect(),
            operator,
            label: Arc::from(Self::HOST_LABEL),
        }
    }

    /// The same rules, with requests counted under `plugin` in the metrics.
    pub fn labelled(mut self, plugin: &str) -> Self {
        self.label = Arc::from(plugin);
        self
    }

    /// Who sends the requests (a plugin id, or [`Destinations::HOST_LABEL`]).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Rules for a call that may reach nothing (e.g. `manifest`).
    pub fn none() -> Self {
        Self {
            declared: vec![],
            operator: OperatorPolicy {
                allow: vec![],
                addresses: AddressGrant::default(),
            },
            label: Arc::from(Self::HOST_LABEL),
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

    /// `ip` as classified by the grant, `"public"` when it may be reached.
    fn class(grant: AddressGrant, ip: &str) -> &'static str {
        grant
            .refuses(ip.parse().expect("test address"))
            .unwrap_or("public")
    }

    /// Every IPv6 form that carries an IPv4 address, with `{}` for the IPv4 part.
    /// Teredo's client (the last 32 bits, inverted) is built by `teredo` below.
    const EMBEDDING_FORMS: [&str; 5] = [
        "::ffff:{}",     // IPv4-mapped, RFC 4291
        "::ffff:0:{}",   // IPv4-translated, RFC 2765
        "::{}",          // IPv4-compatible, RFC 4291 (deprecated)
        "64:ff9b::{}",   // NAT64 well-known prefix, RFC 6052
        "64:ff9b:1::{}", // NAT64 local-use prefix as /96, RFC 8215
    ];

    /// The 6to4 address of `v4` (RFC 3056: bits 16-47).
    fn six_to_four(v4: &str) -> String {
        let o = v4.parse::<Ipv4Addr>().unwrap().octets();
        format!("2002:{:02x}{:02x}:{:02x}{:02x}::1", o[0], o[1], o[2], o[3])
    }

    /// A Teredo address (RFC 4380) with this server and client (stored inverted).
    fn teredo(server: &str, client: &str) -> String {
        let s = u32::from(server.parse::<Ipv4Addr>().unwrap());
        let c = !u32::from(client.parse::<Ipv4Addr>().unwrap());
        let bits =
            (0x2001_0000u128 << 96) | (u128::from(s) << 64) | (0x8000u128 << 48) | u128::from(c);
        Ipv6Addr::from(bits).to_string()
    }

    /// Embedded IPv4 addresses and their classes without any grant.
    const EMBEDDED: [(&str, &str); 9] = [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "non-routable"),
        ("140.82.112.5", "public"),
        ("8.8.8.8", "public"),
    ];

    #[test]
    fn ipv6_forms_are_judged_by_their_ipv4_address() {
        let none = AddressGrant::default();
        for (v4, expected) in EMBEDDED {
            assert_eq!(class(none, v4), expected, "{v4}");
            for form in EMBEDDING_FORMS {
                let v6 = form.replace("{}", v4);
                // `::0.0.0.0` is `::`, unspecified: non-routable too.
                assert_eq!(class(none, &v6), expected, "{v6}");
            }
            let v6 = six_to_four(v4);
            assert_eq!(class(none, &v6), expected, "{v6}");
            // Teredo: the client, then the server, each with a public other end.
            let v6 = teredo("65.54.227.120", v4);
            assert_eq!(class(none, &v6), expected, "{v6} (client {v4})");
            let v6 = teredo(v4, "8.8.8.8");
            assert_eq!(class(none, &v6), expected, "{v6} (server {v4})");
        }
    }

    #[test]
    fn literal_forms_of_private_addresses() {
        let none = AddressGrant::default();
        for (ip, expected) in [
            ("::ffff:a9fe:a9fe", "link-local"),
            ("::a00:1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::808:808", "public"),
            ("64:ff9b:1::a00:1", "private"),
            ("64:ff9b:1::808:808", "public"),
            // 10.0.0.1 under a /48 local-use prefix: the IPv4 position is unknown, refused.
            ("64:ff9b:1:a00:0:100::", "non-routable"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c000:201::1", "non-routable"),
            ("2002:808:808::1", "public"),
            // Teredo, server 65.54.227.120: clients 10.0.0.1, 127.0.0.1, 169.254.169.254, 8.8.8.8.
            ("2001:0:4136:e378:8000:ffff:f5ff:fffe", "private"),
            ("2001:0:4136:e378:8000:ffff:80ff:fffe", "loopback"),
            ("2001:0:4136:e378:8000:ffff:5601:5601", "link-local"),
            ("2001:0:4136:e378:8000:ffff:f7f7:f7f7", "public"),
            // Teredo server 10.0.0.1 or 127.0.0.1, client 8.8.8.8.
            ("2001:0:a00:1:8000:ffff:f7f7:f7f7", "private"),
            ("2001:0:7f00:1:8000:ffff:f7f7:f7f7", "loopback"),
        ] {
            assert_eq!(class(none, ip), expected, "{ip}");
        }
    }

    #[test]
    fn grants_apply_to_embedded_addresses() {
        let lo = AddressGrant::parse("loopback").unwrap();
        let private = AddressGrant::parse("private").unwrap();
        let both = AddressGrant::parse("loopback,private").unwrap();
        assert_eq!(class(lo, "64:ff9b::127.0.0.1"), "public");
        assert_eq!(class(lo, "64:ff9b::10.0.0.1"), "private");
        assert_eq!(class(private, "2002:a00:1::1"), "public");
        assert_eq!(class(private, "2002:7f00:1::1"), "loopback");
        // Teredo needs both ends granted.
        let mixed = teredo("10.0.0.1", "127.0.0.1");
        assert_eq!(class(lo, &mixed), "private");
        assert_eq!(class(private, &mixed), "loopback");
        assert_eq!(class(both, &mixed), "public");
        // Link-local and non-routable addresses stay refused under every grant.
        for ip in [
            "64:ff9b::169.254.169.254".to_string(),
            "::ffff:169.254.169.254".to_string(),
            six_to_four("169.254.169.254"),
            teredo("65.54.227.120", "169.254.169.254"),
            "64:ff9b:1:a00:0:100::".to_string(),
            "2001:db8::1".to_string(),
        ] {
            assert!(both.refuses(ip.parse().unwrap()).is_some(), "{ip}");
        }
    }

    #[test]
    fn special_ipv6_ranges() {
        let none = AddressGrant::default();
        for (ip, expected) in [
            ("::", "non-routable"),
            ("::1", "loopback"),
            ("ff02::1", "non-routable"),
            ("ff0e::1", "non-routable"),
            ("100::1", "non-routable"),
            ("100::ffff:ffff:ffff:ffff", "non-routable"),
            ("2001:db8::1", "non-routable"),
            ("2001:db8:ffff::1", "non-routable"),
            ("3fff::1", "non-routable"),
            ("3fff:fff::1", "non-routable"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fec0::1", "private"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            // Public neighbours of those ranges.
            ("100:0:0:1::1", "public"),
            ("2001:db9::1", "public"),
            ("3fff:1000::1", "public"),
            ("3ffe::1", "public"),
            ("2001:4860:4860::8888", "public"),
            ("2606:4700:4700::1111", "public"),
            ("2a00:1450:4001::1", "public"),
            ("2003::1", "public"),
            ("64:ff9a::a00:1", "public"),
        ] {
            assert_eq!(class(none, ip), expected, "{ip}");
        }
        let lo = AddressGrant::parse("loopback").unwrap();
        assert_eq!(class(lo, "::1"), "public");
        assert_eq!(class(lo, "::"), "non-routable");
        let private = AddressGrant::parse("private").unwrap();
        assert_eq!(class(private, "fec0::1"), "public");
        assert_eq!(class(private, "fd00::1"), "public");
    }

    #[test]
    fn special_ipv4_ranges() {
        let both = AddressGrant::parse("loopback,private").unwrap();
        for ip in [
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "0.1.2.3",
        ] {
            assert_eq!(class(both, ip), "non-routable", "{ip}");
        }
        let none = AddressGrant::default();
        for ip in ["192.0.3.1", "198.51.101.1", "203.0.114.1", "223.255.255.1"] {
            assert_eq!(class(none, ip), "public", "{ip}");
        }
    }
}
