//! The original request behind a forward-auth call, from `X-Original-*` (ingress-nginx) or
//! `X-Forwarded-*` (Traefik, Caddy), believed only from trusted proxies, and a request's
//! external base URL (`RequestBases` keeps them parsed). No IO; the path is read by
//! `http::canonical`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, Method, header::HOST};
use ipnet::IpNet;
use url::Url;

/// `X-Forwarded-For`. Header names as values, so that a lookup need not parse the name.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// The request an ingress is asking about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Its method, when the proxy said (a method-specific skip rule needs it).
    pub method: Option<Method>,
    /// Scheme, host and path-and-query, when known.
    pub url: Option<Url>,
    /// The raw path (with query) as the proxy gave it.
    pub raw_path: Option<String>,
}

/// Whether `peer` may set forwarding headers.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// The method a proxy said in `name`; `None` when it is sent twice: a proxy that appends its
/// own (HAProxy's `add-header`) after the client's copy, which Traefik, Caddy or nginx pass
/// on, would else have the client's believed (`GET` under a `GET` skip rule for a `DELETE`).
fn said_method(headers: &HeaderMap, name: &HeaderName) -> Option<Method> {
    let mut said = headers.get_all(name).iter();
    let first = said.next()?;
    if said.next().is_some() {
        return None;
    }
    let method = first.to_str().ok()?.trim();
    Method::from_bytes(method.as_bytes()).ok()
}

/// The `X-Forwarded-Host` a trusted proxy said, as the base URL reads it: its first value,
/// trimmed; `None` when absent or empty.
pub fn forwarded_host(headers: &HeaderMap) -> Option<&str> {
    header(headers, &X_FORWARDED_HOST)
}

/// For each of `names`, what [`header`] reads: its first value, trimmed, when it is text and
/// not empty. One pass over the headers, as in [`only_one_each`].
fn first_each<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'a str>; N] {
    let mut first: [Option<&'a axum::http::HeaderValue>; N] = [None; N];
    for (name, value) in headers {
        for (wanted, slot) in names.iter().zip(first.iter_mut()) {
            if slot.is_none() && name == *wanted {
                *slot = Some(value);
            }
        }
    }
    first.map(|value| {
        value
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    })
}

/// For each of `names`, its one value, trimmed (`None` when absent or empty); `Err` when it is
/// sent more than once or is not text. One pass over the headers: a request carries a handful,
/// and comparing their names costs less than a hashed lookup of each of these names, which
/// are outside the standard set (every `/auth` asks, and most have none of them).
fn only_one_each<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&HeaderName; N],
) -> [Result<Option<&'a str>, ()>; N] {
    let mut found: [Result<Option<&'a axum::http::HeaderValue>, ()>; N] = [Ok(None); N];
    for (name, value) in headers {
        for (wanted, slot) in names.iter().zip(found.iter_mut()) {
            if name == *wanted {
                *slot = match slot {
                    Ok(None) => Ok(Some(value)),
                    _ => Err(()),
                };
            }
        }
    }
    found.map(|slot| {
        let Some(value) = slot? else {
            return Ok(None);
        };
        let text = value.to_str().map_err(|_| ())?.trim();
        Ok(Some(text).filter(|text| !text.is_empty()))
    })
}

/// Rebuilds the original request from a trusted proxy's headers; `None` when the peer is not
/// trusted or sent nothing usable (rules that need the path then fail closed).
///
/// A proxy passes on the client's other headers (Traefik and Caddy copy them all), so the
/// family it does not set itself may be the client's: when both `X-Original-URL` and
/// `X-Forwarded-Uri` are present they must describe the same request (path and query, and
/// method and URL where both say), else neither is believed and nothing is known about the
/// original request. Neither is believed either when one of them is sent twice or is not text:
/// nginx writes a client's raw bytes into `X-Original-URL`, and reading such a header as absent
/// would believe the other family, which the client may have sent.
pub fn original_request(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<OriginalRequest> {
    if !is_trusted(peer, trusted) {
        return None;
    }
    let [Ok(original_url), Ok(forwarded_uri)] =
        only_one_each(headers, [&X_ORIGINAL_URL, &X_FORWARDED_URI])
    else {
        return Some(OriginalRequest {
            method: None,
            url: None,
            raw_path: None,
        });
    };
    let nginx = original_url.map(|original_url| from_original_url(original_url, headers));
    let forwarded = forwarded_uri.map(|uri| from_forwarded_uri(uri, headers));
    match (nginx, forwarded) {
        (Some(nginx), Some(forwarded)) => Some(
            if nginx.raw_path == forwarded.raw_path
                && !conflict(nginx.method.as_ref(), forwarded.method.as_ref())
                && !conflict(nginx.url.as_ref(), forwarded.url.as_ref())
            {
                nginx
            } else {
                OriginalRequest {
                    method: None,
                    url: None,
                    raw_path: None,
                }
            },
        ),
        (nginx, forwarded) => nginx.or(forwarded),
    }
}

/// The query of every original URL the request's headers say (`X-Original-URL`,
/// `X-Forwarded-Uri`, each value), believed or not, trusted peer or not, its bytes read as
/// UTF-8 with replacements (nginx passes a client's raw bytes on): where one token could reach
/// the application, all are checked, and checking one that never does only refuses more. An
/// absolute URL whose path may start in two places (see [`path_starts`]) says two.
pub fn queries_said(headers: &HeaderMap) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    // From the first `?` of the path on, to its end, `#` included: Go's `ParseRequestURI`
    // keeps what follows one in the query.
    said(headers, |url| {
        path_starts(url).map(|start| {
            let start = start?;
            let query = start + url[start..].find('?')? + 1;
            Some(query..url.len())
        })
    })
}

/// The path of every original URL the request's headers say (`X-Original-URL`, absolute or a
/// path, and `X-Forwarded-Uri`, each value), believed or not, read as [`queries_said`] reads
/// them, up to its `?`: a check that must hold for the path the application will serve runs
/// over all of them.
pub fn paths_said(headers: &HeaderMap) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    said(headers, |url| {
        path_starts(url).map(|start| {
            let start = start?;
            Some(start..url[start..].find('?').map_or(url.len(), |at| start + at))
        })
    })
}

/// Where the path of an original URL said may start: an absolute one (`https://host/…`) at the
/// first `/` after the authority (its end when none follows), as nginx wrote it: nginx takes a
/// `Host` holding `?` or `#` (never `/`) and writes it into `X-Original-URL` as it came, so
/// `https://app:1?/admin;x/users` is the path `/admin;x/users`; and, when a `?` comes first,
/// also there, as a URL is read: nginx's own request line may have an empty path
/// (`GET http://x?access_token=T`), so `https://h?access_token=T` is a query. A value without
/// a scheme starts at its start (a `://` in a path-only value is the path's).
fn path_starts(url: &str) -> [Option<usize>; 2] {
    let scheme = url.find("://").filter(|&at| {
        let scheme = &url[..at];
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let Some(at) = scheme else {
        return [Some(0), None];
    };
    let authority = at + 3;
    let slash = url[authority..]
        .find('/')
        .map_or(url.len(), |slash| authority + slash);
    let query = url[authority..slash].find('?').map(|at| authority + at);
    [Some(slash), query]
}

/// The `part`s of each `X-Original-URL` and `X-Forwarded-Uri` value, read as UTF-8 with
/// replacements, in one pass over the headers (as `only_one_each` reads them); borrowed
/// unless a replacement was made.
fn said(
    headers: &HeaderMap,
    part: impl Fn(&str) -> [Option<std::ops::Range<usize>>; 2],
) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    headers
        .iter()
        .filter(|(name, _)| **name == X_ORIGINAL_URL || **name == X_FORWARDED_URI)
        .flat_map(move |(_, value)| {
            let text = String::from_utf8_lossy(value.as_bytes());
            let ranges = part(&text);
            let parts: [Option<Cow<'_, str>>; 2] = match text {
                Cow::Borrowed(url) => {
                    ranges.map(|range| range.map(|range| Cow::Borrowed(&url[range])))
                }
                Cow::Owned(url) => {
                    ranges.map(|range| range.map(|range| Cow::Owned(url[range].to_owned())))
                }
            };
            parts.into_iter().flatten()
        })
}

/// Whether two proxies' readings both say something, and not the same.
fn conflict<T: PartialEq>(a: Option<&T>, b: Option<&T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// ingress-nginx's reading: `X-Original-URL` (absolute, or a path) and `X-Original-Method`.
/// An absolute URL is believed only whole: when its authority is not a plain `host[:port]`
/// followed by the path's `/`, neither its URL nor its path is read.
fn from_original_url(original_url: &str, headers: &HeaderMap) -> OriginalRequest {
    let method = said_method(headers, &X_ORIGINAL_METHOD);
    let absolute = Url::parse(original_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"));
    let (url, raw_path) = match absolute {
        Some(url) => match raw_path_of_absolute(original_url) {
            Some(raw_path) => (Some(url), Some(raw_path)),
            None => (None, None),
        },
        None if original_url.starts_with('/') => (None, Some(original_url.to_owned())),
        None => (None, None),
    };
    OriginalRequest {
        method,
        url,
        raw_path,
    }
}

/// Traefik's and Caddy's reading: `X-Forwarded-Uri`, `-Method`, `-Proto`, `-Host`.
fn from_forwarded_uri(uri: &str, headers: &HeaderMap) -> OriginalRequest {
    let method = said_method(headers, &X_FORWARDED_METHOD);
    let proto = header(headers, &X_FORWARDED_PROTO).unwrap_or("https");
    let url = header(headers, &X_FORWARDED_HOST)
        .filter(|host| is_host(host) && matches!(proto, "http" | "https") && uri.starts_with('/'))
        .and_then(|host| Url::parse(&format!("{proto}://{host}{uri}")).ok());
    OriginalRequest {
        method,
        url,
        raw_path: uri.starts_with('/').then(|| uri.to_owned()),
    }
}

/// The path-and-query of an absolute URL exactly as written (not normalised by a URL parser,
/// which would hide encoded separators from `http::canonical`). `None` unless a plain
/// `host[:port]` is followed by the path's `/`: nginx lets `?` and `#` into a `Host` after its
/// `:` and builds `X-Original-URL` from it, and `https://app:1?/admin` must not read as the
/// path `/` with the query `/admin`.
pub fn raw_path_of_absolute(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://")?.1;
    let (authority, path) = after_scheme.split_at(after_scheme.find('/')?);
    is_host(authority).then(|| path.to_owned())
}

/// Whether `value` holds only what a `host[:port]` can (a name, an IPv4 or a bracketed IPv6
/// address, a port): no `?`, `#`, `@`, `/` or space that would move where a URL's path begins.
/// A name may hold `_`, as route selection reads one (`canonical::canonical_host`): a host it
/// refused here was described to the upstream as `public_url`'s.
pub fn is_host(value: &str) -> bool {
    // A name of DNS's 253 bytes, a trailing dot and a port: a longer `Host` names no site, and
    // each distinct one would be parsed and kept (`RequestBases::parsed`) at its length.
    !value.is_empty()
        && value.len() <= MAX_HOST
        && value.bytes().all(|byte| {
            matches!(byte, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// The longest host (with its port) read from a request: DNS's 253 bytes, a trailing dot and
/// `:65535`.
pub const MAX_HOST: usize = 253 + 1 + 6;

/// The key a rate limit counts a client address under: an IPv4 address whole, an IPv6 one by
/// its /64, the least a site is given (one host picks any address in it, so a limit per
/// address would count each attempt apart).
pub fn limit_key(address: IpAddr) -> String {
    let IpAddr::V6(v6) = address else {
        return format!("address:{address}");
    };
    // An IPv4 address in IPv6 form (mapped, compatible) is that IPv4 address; one translated
    // by NAT64 (RFC 6052's 64:ff9b::/96, RFC 8215's 64:ff9b:1::/48) is counted whole, as each
    // such address is another IPv4 client.
    if let Some(v4) = v6.to_ipv4() {
        return format!("address:{v4}");
    }
    let segments = v6.segments();
    if segments[..2] == [0x64, 0xff9b] {
        return format!("address:{v6}");
    }
    let [a, b, c, d, ..] = segments;
    format!("address:{a:x}:{b:x}:{c:x}:{d:x}::/64")
}

/// The address of the client behind a request: the peer, or — when the peer is a trusted
/// proxy — the last address in `X-Forwarded-For` that is not itself a trusted proxy (the
/// one the first trusted hop saw). Rate limits key on this, so clients behind one load
/// balancer are not one client.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            // With its port too (`203.0.113.7:51234`, `[2001:db8::1]:443`), as Azure's
            // Application Gateway writes it: read as the address alone, not as unreadable,
            // which would key every client behind it on the proxy's own address.
            let hop = hop.trim();
            let read = hop.parse::<IpAddr>().ok().or_else(|| {
                hop.parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|address| address.ip())
            });
            let Some(address) = read else {
                // An unreadable hop: stop at the last address that is known.
                return client;
            };
            client = address;
            if !is_trusted(address, trusted) {
                return address;
            }
        }
    }
    client
}

/// A request's client address ([`client_address`]), read only when asked for: most requests
/// never need it.
#[derive(Clone, Copy)]
pub struct ClientAddress<'a> {
    peer: IpAddr,
    headers: &'a HeaderMap,
    trusted: &'a [IpNet],
}

impl<'a> ClientAddress<'a> {
    /// The client of a request from `peer` with `headers`, `X-Forwarded-For` believed from
    /// `trusted` peers.
    pub fn new(peer: IpAddr, headers: &'a HeaderMap, trusted: &'a [IpNet]) -> Self {
        Self {
            peer,
            headers,
            trusted,
        }
    }

    /// The address.
    pub fn address(&self) -> IpAddr {
        client_address(self.peer, self.headers, self.trusted)
    }
}

/// The scheme and host of this request as seen from outside: `X-Forwarded-Proto` /
/// `X-Forwarded-Host` from a trusted peer, else the listener's own scheme (`own_proto`: `https`
/// when it serves TLS) and the `Host` header. `None` when the host is missing or holds
/// characters a host cannot.
pub fn base_parts<'a>(
    peer: IpAddr,
    headers: &'a HeaderMap,
    trusted: &[IpNet],
    own_proto: &'static str,
) -> Option<(&'a str, &'a str)> {
    let (mut proto, mut host) = (own_proto, header(headers, &HOST));
    if is_trusted(peer, trusted) {
        // Read as `header` reads each, in one pass (see `only_one_each`).
        let [forwarded_proto, forwarded_host] =
            first_each(headers, [&X_FORWARDED_PROTO, &X_FORWARDED_HOST]);
        if let Some(forwarded_proto) = forwarded_proto {
            proto = forwarded_proto;
        }
        if let Some(forwarded_host) = forwarded_host {
            host = Some(forwarded_host);
        }
    }
    if !matches!(proto, "http" | "https") {
        return None;
    }
    let host = host.filter(|host| is_host(host))?;
    Some((proto, host))
}

/// The external base URL of each request: `public_url`, else what `base_parts` says, each
/// distinct `proto://host` parsed once. With `public_url` set, a request for a host a route
/// names (other than `public_url`'s) is based at that host all the same: a login the route
/// starts must return to that host's `/callback`, where the browser sends that host's cookies
/// (the login state's, then the session's); at `public_url`'s it would send neither.
pub struct RequestBases {
    /// `public_url`, shared, when configured.
    public_url: Option<Arc<Url>>,
    /// The hosts routes name, other than `public_url`'s (canonical), served at their own base.
    own_hosts: Vec<String>,
    /// Peers whose `X-Forwarded-Proto` / `X-Forwarded-Host` are believed.
    trusted_proxies: Vec<IpNet>,
    /// Parsed base URLs by `proto://host/`.
    parsed: quick_cache::sync::Cache<Box<str>, Arc<Url>>,
    /// The public listener's scheme: `https` when it serves TLS.
    own_proto: &'static str,
}

impl RequestBases {
    /// Bases for requests served at `public_url` (when set) or at the host they name.
    pub fn new(public_url: Option<Url>, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            public_url: public_url.map(Arc::new),
            own_hosts: Vec::new(),
            trusted_proxies,
            parsed: quick_cache::sync::Cache::new(1024),
            own_proto: "http",
        }
    }

    /// These bases, with the hosts routes name (`route.host`, canonical) served at their own
    /// base when `public_url` names another.
    #[must_use]
    pub fn with_route_hosts<'a>(mut self, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let public_host = self
            .public_url
            .as_ref()
            .and_then(|url| url.host_str())
            .and_then(super::canonical::canonical_host)
            .map(std::borrow::Cow::into_owned);
        self.own_hosts = hosts
            .into_iter()
            .filter(|host| public_host.as_deref() != Some(*host))
            .map(str::to_owned)
            .collect();
        self.own_hosts.sort_unstable();
        self.own_hosts.dedup();
        self
    }

    /// The client's address for a request from `peer` ([`client_address`] through the
    /// trusted proxies).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_address(peer, headers, &self.trusted_proxies)
    }

    /// Bases for a listener that serves https: a request no trusted proxy describes was made
    /// with https.
    #[must_use]
    pub fn over_tls(mut self, tls: bool) -> Self {
        self.own_proto = if tls { "https" } else { "http" };
        self
    }

    /// The scheme and host (with a port that is not the scheme's) an upstream is told a
    /// request from `peer` was made with, as `X-Forwarded-Proto` / `X-Forwarded-Host`: those of
    /// its `base`, except that with `public_url` set, a request that named another host (a
    /// route of another application) is described as it was made, not as `public_url`, and
    /// one that named no usable host with no host at all.
    pub fn forwarded<'a>(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        base: &'a Url,
    ) -> (&'a str, Option<std::borrow::Cow<'a, str>>) {
        let of_base = (
            base.scheme(),
            base.host_str().map(|_| {
                std::borrow::Cow::Borrowed(
                    &base[url::Position::BeforeHost..url::Position::AfterPort],
                )
            }),
        );
        let Some(public_url) = &self.public_url else {
            return of_base;
        };
        let public_host = public_url
            .host_str()
            .map(|host| host.trim_start_matches('[').trim_end_matches(']'));
        match base_parts(peer, headers, &self.trusted_proxies, self.own_proto) {
            Some((proto, host))
                if super::canonical::canonical_host(host).as_deref() != public_host =>
            {
                // As the request's base has it (`base`): the scheme a trusted proxy said, else
                // `public_url`'s (TLS ended in front, by a balancer outside `trusted_proxies`),
                // not the listener's own `http`, which an application would read as a plain
                // request (cookies without `Secure`, a redirect to https in a loop).
                let said = is_trusted(peer, &self.trusted_proxies)
                    .then(|| header(headers, &X_FORWARDED_PROTO))
                    .flatten();
                let proto = match said {
                    Some("https") => "https",
                    Some(_) => "http",
                    // `public_url`'s scheme only where the base is this host itself (a route
                    // host): another host (`tollgate.ns.svc:8080`) is based at `public_url`,
                    // and was reached as the listener is.
                    None if proto == "https"
                        || (base.scheme() == "https"
                            && base.host_str() != public_url.host_str()) =>
                    {
                        "https"
                    }
                    None => "http",
                };
                (proto, Some(std::borrow::Cow::Owned(host.to_owned())))
            }
            Some(_) => of_base,
            // No usable host (an HTTP/1.0 request without `Host`, a trusted proxy's
            // `X-Forwarded-Proto: HTTPS`): none is described, never `public_url`'s, whose pages
            // an application serving several hosts would serve under a host-less route's rules.
            // The application reads the `Host` that chose the route, passed on unchanged.
            None => (base.scheme(), None),
        }
    }

    /// The external base URL of a request from `peer` (see `base_parts`), parsed once per
    /// distinct host.
    pub fn base(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Arc<Url>> {
        if let Some(url) = &self.public_url {
            let own = (!self.own_hosts.is_empty())
                .then(|| base_parts(peer, headers, &self.trusted_proxies, self.own_proto))
                .flatten()
                .filter(|(_, host)| {
                    super::canonical::canonical_host(host)
                        .is_some_and(|host| self.own_hosts.iter().any(|own| *own == host))
                });
            // In the scheme a trusted proxy says, else in `public_url`'s: the hosts are reached
            // the way it is (TLS ended in front, by a balancer outside `trusted_proxies`).
            return match own {
                Some((_, host)) => {
                    let said = is_trusted(peer, &self.trusted_proxies)
                        .then(|| header(headers, &X_FORWARDED_PROTO))
                        .flatten()
                        .filter(|proto| matches!(*proto, "http" | "https"));
                    self.parsed_base(said.unwrap_or(url.scheme()), host)
                }
                None => Some(url.clone()),
            };
        }
        let (proto, host) = base_parts(peer, headers, &self.trusted_proxies, self.own_proto)?;
        self.parsed_base(proto, host)
    }

    /// `proto://host/`, parsed once per distinct text.
    fn parsed_base(&self, proto: &str, host: &str) -> Option<Arc<Url>> {
        /// This thread's last base: its `proto://host/` text and the URL it parses to (the
        /// same whichever `RequestBases` parsed it). A connection's requests name one host.
        struct Last {
            key: String,
            url: Option<Arc<Url>>,
        }
        thread_local! {
            static LAST: std::cell::RefCell<Last> =
                const { std::cell::RefCell::new(Last { key: String::new(), url: None }) };
        }
        let is_key = |key: &str| {
            key.len() == proto.len() + host.len() + 4
                && key.starts_with(proto)
                && key.get(proto.len()..proto.len() + 3) == Some("://")
                && key.get(proto.len() + 3..key.len() - 1) == Some(host)
        };
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if let Some(url) = last.url.as_ref().filter(|_| is_key(&last.key)) {
                return Some(url.clone());
            }
            last.url = None;
            last.key.clear();
            last.key.push_str(proto);
            last.key.push_str("://");
            last.key.push_str(host);
            last.key.push('/');
            let url = match self.parsed.get(last.key.as_str()) {
                Some(url) => url,
                None => {
                    let url = Arc::new(Url::parse(&last.key).ok()?);
                    self.parsed.insert(last.key.as_str().into(), url.clone());
                    url
                }
            };
            last.url = Some(url.clone());
            Some(url)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_counts_an_ipv6_address_by_its_64() {
        let key = |text: &str| limit_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.1"), "address:192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), "address:192.0.2.1");
        assert_eq!(key("::192.0.2.1"), "address:192.0.2.1");
        // Translated IPv4 clients (NAT64) are each their own.
        assert_ne!(key("64:ff9b::c000:201"), key("64:ff9b::c000:202"));
        assert_ne!(key("64:ff9b:1::c000:201"), key("64:ff9b:1::c000:202"));
    }

    #[test]
    fn paths_said_are_each_values_path_up_to_its_query() {
        use axum::http::HeaderValue;
        let said = |values: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in values {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            let mut paths: Vec<String> =
                paths_said(&headers).map(|path| path.into_owned()).collect();
            paths.sort();
            paths
        };
        assert_eq!(
            said(&[
                (
                    "x-original-url",
                    "https://app.example.com/admin;x/users?a=1"
                ),
                ("x-forwarded-uri", "/x?next=http://e/y;z"),
                ("x-forwarded-uri", "/admin;x/users?next=http://e"),
                ("x-original-url", "/path-only"),
                ("x-original-url", "https://app.example.com"),
            ]),
            ["", "/admin;x/users", "/admin;x/users", "/path-only", "/x"]
        );
        // A `Host` holding `?` or `#` (nginx takes one, and writes it as it came): the path
        // starts at the first `/` after the authority, and the query after it.
        assert_eq!(
            said(&[
                ("x-original-url", "https://app.example.com:1?/admin;x/users"),
                ("x-original-url", "http://h#/a?b=c"),
                ("x-original-url", "https://app?"),
            ]),
            // The path as a URL is read, empty when a `?` comes first, is said too: nginx's own
            // request line may have an empty path.
            ["", "", "", "/a", "/admin;x/users"]
        );
        let mut headers = HeaderMap::new();
        for value in [
            "https://h:1?/api?access_token=B",
            "http://h?access_token=T&next=/home",
            "http://h?x=y",
            "/p?q=1",
        ] {
            headers.append("x-original-url", HeaderValue::from_str(value).unwrap());
        }
        let queries: Vec<String> = queries_said(&headers).map(|q| q.into_owned()).collect();
        assert_eq!(
            queries,
            [
                "access_token=B",
                "/api?access_token=B",
                "access_token=T&next=/home",
                "x=y",
                "q=1"
            ]
        );
    }

    #[test]
    fn original_request_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-original-url",
            "https://app.example.com/public/%2e%2e/admin?q=1"
                .parse()
                .unwrap(),
        );
        headers.insert("x-original-method", "POST".parse().unwrap());
        let from_proxy =
            original_request("127.0.0.1".parse().unwrap(), &headers, &trusted).unwrap();
        assert_eq!(from_proxy.method, Some(Method::POST));
        assert_eq!(
            from_proxy.raw_path.as_deref(),
            Some("/public/%2e%2e/admin?q=1")
        );
        assert!(original_request("10.1.2.3".parse().unwrap(), &headers, &trusted).is_none());
        let mut traefik = HeaderMap::new();
        traefik.insert("x-forwarded-uri", "/public/x".parse().unwrap());
        traefik.insert("x-forwarded-method", "GET".parse().unwrap());
        traefik.insert("x-forwarded-host", "app.example.com".parse().unwrap());
        traefik.insert("x-forwarded-proto", "https".parse().unwrap());
        let from_traefik =
            original_request("::ffff:127.0.0.1".parse().unwrap(), &traefik, &trusted).unwrap();
        assert_eq!(
            from_traefik.url.unwrap().as_str(),
            "https://app.example.com/public/x"
        );
    }

    #[test]
    fn an_original_url_whose_authority_is_no_host_is_not_read() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // nginx accepts `Host: app.example.com:1?` and sends `$scheme://$http_host$request_uri`;
        // a URL parser reads the path `/` and the query `/admin/secret`.
        for url in [
            "https://app.example.com:1?/admin/secret",
            "https://app.example.com:1#/admin/secret",
            "https://app.example.com?/admin",
            "https://user@app.example.com/admin",
            "https://app.example.com",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-original-url", url.parse().unwrap());
            let read = original_request(peer, &headers, &trusted).unwrap();
            assert_eq!((read.url, read.raw_path), (None, None), "{url}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-original-url",
            "https://[2001:db8::1]:8443/admin?x=1".parse().unwrap(),
        );
        let read = original_request(peer, &headers, &trusted).unwrap();
        assert_eq!(read.raw_path.as_deref(), Some("/admin?x=1"));
        assert!(read.url.is_some());
        // Traefik's `X-Forwarded-Host` is read only as a host too.
        let mut traefik = HeaderMap::new();
        traefik.insert("x-forwarded-uri", "/admin".parse().unwrap());
        traefik.insert("x-forwarded-host", "app.example.com:1?".parse().unwrap());
        let read = original_request(peer, &traefik, &trusted).unwrap();
        assert_eq!(read.url, None);
        assert_eq!(read.raw_path.as_deref(), Some("/admin"));
    }

    #[test]
    fn two_readings_that_disagree_are_neither_believed() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // What Traefik sets, and an X-Original-* pair it copied from the client.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-uri", "/admin".parse().unwrap());
        headers.insert("x-forwarded-method", "GET".parse().unwrap());
        headers.insert("x-forwarded-host", "app.example.com".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        let unknown = OriginalRequest {
            method: None,
            url: None,
            raw_path: None,
        };
        let with = |name: &'static str, value: &'static str| {
            let mut headers = headers.clone();
            headers.insert(name, value.parse().unwrap());
            original_request(peer, &headers, &trusted).unwrap()
        };
        assert_eq!(
            with("x-original-url", "https://app.example.com/public/x"),
            unknown
        );
        assert_eq!(with("x-original-url", "/public/x"), unknown);
        assert_eq!(
            with("x-original-url", "https://elsewhere.example/admin"),
            unknown
        );
        let mut method = headers.clone();
        method.insert(
            "x-original-url",
            "https://app.example.com/admin".parse().unwrap(),
        );
        method.insert("x-original-method", "POST".parse().unwrap());
        assert_eq!(original_request(peer, &method, &trusted).unwrap(), unknown);
        // The same request told twice is believed.
        method.insert("x-original-method", "GET".parse().unwrap());
        let agreed = original_request(peer, &method, &trusted).unwrap();
        assert_eq!(agreed.raw_path.as_deref(), Some("/admin"));
        assert_eq!(agreed.method, Some(Method::GET));
    }

    #[test]
    fn the_client_address_is_the_last_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        let address = |peer: &str| client_address(peer.parse().unwrap(), &headers, &trusted);
        assert_eq!(
            address("10.0.0.1"),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address("192.0.2.1"),
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "an untrusted peer's header is not read"
        );
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", "junk, 10.0.0.3".parse().unwrap());
        assert_eq!(
            client_address("10.0.0.1".parse().unwrap(), &junk, &trusted),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
        // With ports (Azure's Application Gateway writes them): the addresses still count.
        for (hops, client) in [
            ("203.0.113.7:51234, 10.0.0.2", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            let mut ported = HeaderMap::new();
            ported.insert("x-forwarded-for", hops.parse().unwrap());
            assert_eq!(
                client_address("10.0.0.1".parse().unwrap(), &ported, &trusted),
                client.parse::<IpAddr>().unwrap(),
                "{hops}"
            );
        }
    }

    #[test]
    fn request_bases_believe_forwarded_headers_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let bases = RequestBases::new(None, trusted);
        let mut headers = HeaderMap::new();
        headers.insert("host", "internal:4180".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "auth.example.com".parse().unwrap());
        let trusted_base = bases.base("127.0.0.1".parse().unwrap(), &headers).unwrap();
        assert_eq!(trusted_base.as_str(), "https://auth.example.com/");
        let untrusted_base = bases.base("192.0.2.1".parse().unwrap(), &headers).unwrap();
        assert_eq!(untrusted_base.as_str(), "http://internal:4180/");
        // Asked again, the same host is the same parsed URL.
        let again = bases.base("192.0.2.1".parse().unwrap(), &headers).unwrap();
        assert!(Arc::ptr_eq(&untrusted_base, &again));
        // A listener serving https: https unless a trusted proxy says otherwise.
        let tls = RequestBases::new(None, vec!["127.0.0.0/8".parse().unwrap()]).over_tls(true);
        let direct = tls.base("192.0.2.1".parse().unwrap(), &headers).unwrap();
        assert_eq!(direct.as_str(), "https://internal:4180/");
        headers.insert("x-forwarded-proto", "http".parse().unwrap());
        let proxied = tls.base("127.0.0.1".parse().unwrap(), &headers).unwrap();
        assert_eq!(proxied.as_str(), "http://auth.example.com/");
        let fixed = RequestBases::new(
            Some(Url::parse("https://gate.example/").unwrap()),
            Vec::new(),
        );
        assert_eq!(
            fixed
                .base("127.0.0.1".parse().unwrap(), &headers)
                .unwrap()
                .as_str(),
            "https://gate.example/"
        );
    }

    /// With `public_url`, a host a route names is based at itself, in `public_url`'s scheme;
    /// every other host (a forged one, `public_url`'s own) at `public_url`. A `X-Forwarded-Host`
    /// counts only from a trusted proxy.
    #[test]
    fn a_route_host_is_its_own_base_under_a_public_url() {
        let bases = RequestBases::new(
            Some(Url::parse("https://auth.example.com/").unwrap()),
            vec!["10.0.0.0/8".parse().unwrap()],
        )
        .with_route_hosts(["app.example.com", "auth.example.com"]);
        let base = |peer: &str, fields: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.insert(*name, value.parse().unwrap());
            }
            bases
                .base(peer.parse().unwrap(), &headers)
                .map(|url| url.to_string())
        };
        let public = Some("https://auth.example.com/".to_owned());
        for host in [
            "app.example.com",
            "App.Example.com.",
            "app.example.com:8443",
        ] {
            let expected = format!("https://{host}/")
                .replace("https://App.Example.com./", "https://app.example.com./");
            assert_eq!(
                base("192.0.2.1", &[("host", host)]),
                Some(expected),
                "{host}"
            );
        }
        assert_eq!(base("192.0.2.1", &[("host", "evil.example")]), public);
        assert_eq!(base("192.0.2.1", &[("host", "auth.example.com")]), public);
        // The host an untrusted peer says it forwarded is not believed; a trusted one's is.
        let forwarded = [
            ("host", "evil.example"),
            ("x-forwarded-host", "app.example.com"),
        ];
        assert_eq!(base("192.0.2.1", &forwarded), public);
        assert_eq!(
            base("10.1.2.3", &forwarded),
            Some("https://app.example.com/".to_owned())
        );
        // A trusted proxy's scheme is believed; an untrusted one's is not.
        let plain = [("host", "app.example.com"), ("x-forwarded-proto", "http")];
        assert_eq!(
            base("10.1.2.3", &plain),
            Some("http://app.example.com/".to_owned())
        );
        assert_eq!(
            base("192.0.2.1", &plain),
            Some("https://app.example.com/".to_owned())
        );
        // And the upstream is told the scheme the base has: behind a balancer that ended TLS
        // outside `trusted_proxies`, `public_url`'s https, not the listener's own http.
        let told = |peer: &str, fields: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.insert(*name, value.parse().unwrap());
            }
            let peer = peer.parse().unwrap();
            let request_base = bases.base(peer, &headers).unwrap();
            bases.forwarded(peer, &headers, &request_base).0.to_owned()
        };
        assert_eq!(told("192.0.2.1", &[("host", "app.example.com")]), "https");
        assert_eq!(told("192.0.2.1", &plain), "https");
        assert_eq!(told("10.1.2.3", &plain), "http", "a trusted proxy's word");
        // A host no route names is based at `public_url`, but was reached as the listener
        // is: plain http here.
        assert_eq!(
            told("192.0.2.1", &[("host", "tollgate.ns.svc:8080")]),
            "http"
        );
    }

    /// A thread remembers its last base: another host, another scheme, or a host that does
    /// not parse right after one that did, each gets its own answer.
    #[test]
    fn a_threads_last_base_answers_only_for_its_own_scheme_and_host() {
        let bases = RequestBases::new(None, vec!["127.0.0.0/8".parse().unwrap()]);
        let base = |proto: &str, host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("host", host.parse().unwrap());
            headers.insert("x-forwarded-proto", proto.parse().unwrap());
            bases
                .base("127.0.0.1".parse().unwrap(), &headers)
                .map(|url| url.as_str().to_owned())
        };
        for _ in 0..2 {
            assert_eq!(
                base("http", "a.example").as_deref(),
                Some("http://a.example/")
            );
            assert_eq!(
                base("http", "a.example").as_deref(),
                Some("http://a.example/")
            );
            assert_eq!(
                base("https", "a.example").as_deref(),
                Some("https://a.example/")
            );
            assert_eq!(
                base("http", "b.example:81").as_deref(),
                Some("http://b.example:81/")
            );
            assert_eq!(base("http", "[").as_deref(), None);
            assert_eq!(base("http", "[").as_deref(), None);
            // A `Host` no DNS name is as long as, parsed and kept at its length, never.
            let long = format!("{}.example:443", "a.".repeat(30_000));
            assert_eq!(base("http", &long).as_deref(), None);
            assert_eq!(
                base("http", "ab.example").as_deref(),
                Some("http://ab.example/")
            );
            assert_eq!(
                base("https", "ab.exampl").as_deref(),
                Some("https://ab.exampl/")
            );
        }
    }
}
