//! Header hygiene for the proxy: identity headers named in `route.headers` are removed from
//! the client's request in every spelling a backend might read as the same name (any case,
//! `_` or `.` for `-`, repeated), and Tollgate's own cookies never reach the upstream. Pure.

use axum::http::header::Entry;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::http::{is_identity_elsewhere, same_header_name as same_header};

/// Removes every request header that a backend could take for one of `identity_headers`, or
/// for an identity header of the gateways Tollgate replaces ([`is_identity_elsewhere`]).
pub fn strip_identity_headers<'a>(
    headers: &mut HeaderMap,
    identity_headers: impl Iterator<Item = &'a HeaderName> + Clone,
) {
    remove_where(headers, |name| {
        is_identity_elsewhere(name.as_str())
            || identity_headers
                .clone()
                .any(|forbidden| same_header(name.as_str(), forbidden.as_str()))
    });
}

/// Whether a backend could take a header named `name` (in lower case, as header names are
/// kept) for one only a proxy sets about the client's request: who sent it, how, to which
/// host and path, with which method or identity. `X-Forwarded-*` and `X-Original-*` are
/// whole families (oauth2-proxy's `X-Forwarded-User`, nginx's `X-Original-URI`), so any name
/// in them is one. The client-address headers of CDNs and of libraries that read them before
/// `X-Forwarded-For` (npm `request-ip` reads `X-Client-IP` first) are too.
pub fn is_said_by_proxies(name: &str) -> bool {
    let bytes = name.as_bytes();
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|start| same_header(start, prefix))
    };
    // Almost every header a client sends starts otherwise: decided on two bytes.
    match bytes {
        [b'x', b'-' | b'_' | b'.', ..] => {}
        [b'f', ..] => {
            return [
                "forwarded",
                "forwarded-for",
                "fastly-client-ip",
                "fly-client-ip",
            ]
            .iter()
            .any(|known| same_header(name, known));
        }
        [b't', b'r', ..] => return same_header(name, "true-client-ip"),
        [b'c', b'f', ..] => return same_header(name, "cf-connecting-ip") || starts("cf-cert-"),
        // PHP's common `getUserIP()` reads `HTTP_CLIENT_IP` before `X-Forwarded-For`.
        [b'c', b'l', ..] => return same_header(name, "client-ip"),
        [b'd', b'o', ..] => return same_header(name, "do-connecting-ip"),
        // The client certificate a TLS-terminating proxy checked (ingress-nginx's
        // `auth-tls-pass-certificate-to-upstream`): an application that authenticates by
        // mutual TLS believes it.
        [b's', b's', ..] => return starts("ssl-client-"),
        _ => return false,
    }
    starts("x-forwarded-")
        || starts("x-ssl-")
        || starts("x-client-cert")
        || starts("x-amzn-mtls-")
        || starts("x-original-")
        || [
            "x-forwarded",
            "x-real-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "x-envoy-external-address",
            "x-azure-clientip",
            "x-remote-ip",
            "x-remote-addr",
            "x-originating-ip",
            "x-proxyuser-ip",
            "x-appengine-user-ip",
            "x-client-verify",
            "x-arr-clientcert",
        ]
        .iter()
        .any(|known| same_header(name, known))
        || overrides_the_request_line(name)
}

/// Removes every header only a proxy may set ([`is_said_by_proxies`]), and those of
/// [`RESTATED`], in every spelling.
pub fn strip_proxy_headers(headers: &mut HeaderMap) {
    remove_where(headers, |name| {
        is_said_by_proxies(name.as_str()) || restates_scheme_or_port(name.as_str())
    });
}

/// The headers that say the client's scheme or port in other words than the
/// `X-Forwarded-Proto` and `-Host` Tollgate sets: Rack prefers `X-Forwarded-Ssl` and `-Scheme`
/// to `-Proto` and takes `X-Forwarded-Port` over the host's port, Spring and Tomcat read
/// `-Port` and `-Ssl` (Tomcat takes the port from `-Port` alone), Tornado `X-Scheme`, older
/// Microsoft stacks `Front-End-Https`. An ingress in front copies its client's on, so the
/// values that go upstream are never the ones that came in: from a client, none; from a
/// trusted proxy, Tollgate's own for each it sent ([`restate_scheme_and_port`]), so that an
/// application builds its links on the scheme and port Tollgate describes, not on a client's
/// `http` or `:1337`.
const RESTATED: [&str; 6] = [
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-scheme",
    "x-url-scheme",
    "front-end-https",
];

/// Which of [`RESTATED`] (in any spelling) `name` (in lower case) is.
fn restated_index(name: &str) -> Option<usize> {
    if !matches!(name.as_bytes(), [b'x' | b'f', ..]) {
        return None;
    }
    RESTATED.iter().position(|known| same_header(name, known))
}

fn restates_scheme_or_port(name: &str) -> bool {
    restated_index(name).is_some()
}

/// Which of [`RESTATED`] a trusted proxy's request carried under its own name (a bit each, by
/// index): Tollgate sets those again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restated(u8);

/// Sets, in Tollgate's words, the headers of [`RESTATED`] that a trusted proxy's request
/// carried (and [`strip_overrides_and_forwarded`] removed): the scheme `proto`, and the port
/// of `host` (the scheme's default when it names none). No port is said when no host is
/// described.
pub fn restate_scheme_and_port(
    headers: &mut HeaderMap,
    restated: Restated,
    proto: &str,
    host: Option<&str>,
) {
    if restated.0 == 0 {
        return;
    }
    let https = proto == "https";
    for (index, name) in RESTATED.iter().enumerate() {
        if restated.0 & (1 << index) == 0 {
            continue;
        }
        let value = match *name {
            "x-forwarded-port" => host.map(|host| port_of(host, https)),
            "x-forwarded-ssl" | "front-end-https" => Some(if https { "on" } else { "off" }),
            _ => Some(proto),
        };
        if let Some(value) = value.and_then(|value| HeaderValue::from_str(value).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The port `host` (`name[:port]`, `[v6][:port]`) names, else the scheme's default.
fn port_of(host: &str, https: bool) -> &str {
    let after_address = host.rsplit_once(']').map_or(host, |(_, after)| after);
    match after_address.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) => {
            port
        }
        _ if https => "443",
        _ => "80",
    }
}

/// Whether an upstream could take a header named `name` (in lower case) for another path or
/// method than the request line's: `X-Original-URL` and `-URI` (Symfony, Zend, IIS rewrite),
/// `X-Original-Method`, `X-Forwarded-Uri` and `-Method` (what Traefik and Caddy say of the
/// original request, which `/auth` itself reads), `X-Rewrite-URL`, `X-HTTP-Method-Override` and
/// its kind. Tollgate
/// decides on the request line, and a trusted ingress in front copies a client's headers, so
/// these never go upstream, whoever sent them.
pub fn overrides_the_request_line(name: &str) -> bool {
    matches!(name.as_bytes(), [b'x', b'-' | b'_' | b'.', ..])
        && PATH_OVERRIDES
            .iter()
            .chain(&["x-original-method", "x-forwarded-method"])
            .any(|known| same_header(name, known))
        || crate::http::is_method_override_name(name)
}

/// The headers of [`overrides_the_request_line`] that name another path (in lower case):
/// `X-Original-URL` and `-URI`, `X-Forwarded-Uri`, `X-Rewrite-URL`.
pub const PATH_OVERRIDES: [&str; 4] = [
    "x-original-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-rewrite-url",
];

/// Removes, from a trusted proxy's request, every header that
/// [`overrides_the_request_line`] or is one of [`RESTATED`], and `Forwarded` (RFC 7239), in
/// every spelling; says which of [`RESTATED`] it carried under its own name. `Forwarded`
/// says again, in its own words, what the `X-Forwarded-*` headers Tollgate sets say: an
/// upstream that prefers it (Spring's `ForwardedHeaderFilter`, Rack) would read the host and
/// scheme the client wrote, which an ingress in front copies on.
pub fn strip_overrides_and_forwarded(headers: &mut HeaderMap) -> Restated {
    let restated = std::cell::Cell::new(0u8);
    remove_where(headers, |name| {
        let name = name.as_str();
        if let Some(index) = restated_index(name) {
            if RESTATED[index] == name {
                restated.set(restated.get() | 1 << index);
            }
            return true;
        }
        overrides_the_request_line(name)
            || same_header(name, "forwarded")
            || is_other_spelling_of_forwarding(name)
    });
    Restated(restated.get())
}

/// Whether `name` is `X_Forwarded_Host`, `-Proto` or `-For` spelt with `_` or `.`: Tollgate
/// sets the `-` names, and an application reading headers the CGI way
/// (`HTTP_X_FORWARDED_HOST`) would take the client's copy, which an ingress passes on, for
/// Tollgate's.
fn is_other_spelling_of_forwarding(name: &str) -> bool {
    name.starts_with(['x', 'X'])
        && name.contains(['_', '.'])
        && ["x-forwarded-host", "x-forwarded-proto", "x-forwarded-for"]
            .iter()
            .any(|known| same_header(name, known))
}

/// Removes every header whose name `doomed` picks; looks no further when none is picked.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&doomed) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// Whether a cookie name is one of Tollgate's: the session cookie, its chunks, its binding,
/// login states, the token service's form token (`__Host-` ones included).
pub fn is_tollgate_cookie(name: &str, cookie_name: &str) -> bool {
    let ours =
        |name: &str| is_named(name, cookie_name) || name == crate::http::cookies::FORM_TOKEN_COOKIE;
    ours(name) || name.strip_prefix("__Host-").is_some_and(ours)
}

/// Whether `name` is `cookie_name`, one of its chunks, its binding (`_bind`) or one of its
/// login states.
fn is_named(name: &str, cookie_name: &str) -> bool {
    crate::http::cookies::is_session_or_chunk(name, cookie_name)
        || name
            .strip_prefix(cookie_name)
            .is_some_and(|rest| rest == "_bind" || rest.starts_with("_login_"))
}

/// Takes `"cookies"` out of the upstream's `Clear-Site-Data` (and `"*"`, for the kinds it
/// names but cookies): the browser would delete every cookie of the site, Tollgate's session
/// and its binding among them, signing its user out of every route, which an application
/// must not do by `Set-Cookie` either. Returns whether it changed the header.
pub fn keep_tollgate_cookies_from_clear_site_data(headers: &mut HeaderMap) -> bool {
    if !headers.contains_key("clear-site-data") {
        return false;
    }
    let mut changed = false;
    let mut kept: Vec<String> = Vec::new();
    for value in headers.get_all("clear-site-data") {
        for directive in String::from_utf8_lossy(value.as_bytes()).split(',') {
            match directive.trim() {
                "\"cookies\"" => changed = true,
                "\"*\"" => {
                    changed = true;
                    kept.extend(
                        [
                            "\"cache\"",
                            "\"storage\"",
                            "\"executionContexts\"",
                            "\"clientHints\"",
                            "\"prefetchCache\"",
                            "\"prerenderCache\"",
                        ]
                        .map(str::to_owned),
                    );
                }
                "" => {}
                other => kept.push(other.to_owned()),
            }
        }
    }
    if !changed {
        return false;
    }
    headers.remove("clear-site-data");
    if let Ok(value) = HeaderValue::from_str(&kept.join(", "))
        && !kept.is_empty()
    {
        headers.insert("clear-site-data", value);
    }
    true
}

/// Removes the upstream's `Set-Cookie`s of Tollgate's own cookies (the session, its chunks,
/// login states): an application must not set, shadow (a narrower `Path` is sent first) or
/// delete them, swapping the browser's session for another. Returns whether any was removed.
pub fn strip_tollgate_set_cookies(headers: &mut HeaderMap, cookie_name: &str) -> bool {
    let ours = |value: &HeaderValue| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let pair = text.split(';').next().unwrap_or("");
        let (name, rest) = pair.split_once('=').unwrap_or(("", pair));
        // A cookie with an empty name (`=tollgate=x`) is stored by browsers and sent back as
        // `tollgate=x`: its value's own name is the one that counts.
        let name = match name.trim() {
            "" => rest.split_once('=').map_or(rest, |(name, _)| name).trim(),
            name => name,
        };
        is_tollgate_cookie(name, cookie_name)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
        return false;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| !ours(value))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
    true
}

/// Removes Tollgate's cookies from the `Cookie` header(s), keeping the others in order, in one
/// field: an HTTP/2 client may split its cookies over several (RFC 9113 §8.2.3), which must be
/// joined before they go to an HTTP/1.1 upstream (Starlette reads the first field only,
/// gunicorn joins them with `,`). Headers that are not UTF-8 are dropped.
pub fn strip_tollgate_cookies(headers: &mut HeaderMap, cookie_name: &str) {
    // The common case on a session: one header holding only Tollgate's session cookie.
    let mut values = headers.get_all(header::COOKIE).iter();
    if let (Some(only), None) = (values.next(), values.next()) {
        let bytes = only.as_bytes();
        let ours = bytes
            .strip_prefix(cookie_name.as_bytes())
            .is_some_and(|rest| {
                rest.first() == Some(&b'=') && memchr::memchr(b';', rest).is_none()
            });
        if ours {
            headers.remove(header::COOKIE);
            return;
        }
    }
    let mut kept = String::new();
    let mut changed = false;
    for (field, value) in headers.get_all(header::COOKIE).iter().enumerate() {
        changed |= field > 0;
        // Word by word, not byte by byte like `HeaderValue::to_str`: a session cookie is long.
        let Some(text) = crate::http::utf8(value.as_bytes()) else {
            changed = true;
            continue;
        };
        for pair in crate::http::cookies::pairs(text) {
            if is_tollgate_cookie(pair.name, cookie_name) {
                changed = true;
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(pair.text);
        }
    }
    if !changed {
        return;
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_maybe_shared(axum::body::Bytes::from(kept))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Keeps an answer to an authenticated request out of shared caches unless the upstream said
/// a shared cache may keep it: `private` is added to its `Cache-Control` unless that already
/// says `private` (naming no fields), `no-store`, `public` or `s-maxage`. (A CDN that reads a
/// header of its own, [`crate::http::CDN_CACHE_CONTROLS`], follows what the upstream put
/// there.) A cache in front of Tollgate (a CDN, an nginx
/// `proxy_cache`) keys by URL: it never sees the identity headers the upstream answered, and
/// the upstream never sees the cookie a `Vary` could name, so an answer it kept would be
/// served to the next person asking, signed in or not. `no-cache` and `max-age` alone let a
/// shared cache keep it (and, revalidating with another user's cookie, hand it on). A
/// `Cache-Control` that does not parse becomes `private, no-store`: a cache may drop it, and
/// with it an added directive, and a browser may have read a `no-store` in it
/// (`no-store, max-age=0; must-revalidate` fails at the `;`) that `private` alone would lose,
/// leaving a signed-in page in its disk cache after sign-out.
/// Interim answers and `304` are left alone: a cache takes a `304`'s fields into the answer
/// it holds, which was marked when it came.
pub fn keep_out_of_shared_caches(status: StatusCode, headers: &mut HeaderMap) {
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return;
    }
    // One lookup: most answers carry no `Cache-Control`, and get one.
    let mut entry = match headers.entry(header::CACHE_CONTROL) {
        Entry::Vacant(vacant) => {
            vacant.insert(HeaderValue::from_static("private"));
            return;
        }
        Entry::Occupied(occupied) => occupied,
    };
    let mut lines = Vec::new();
    let mut unparsed = false;
    for value in entry.iter() {
        let (mut shared_said, mut any) = (false, false);
        let parsed = cache_directives(value.as_bytes(), |name, argument| {
            any = true;
            shared_said |= says_how_shared_caches_keep_it(name, argument);
        });
        if parsed.is_none() {
            unparsed = true;
            break;
        }
        if shared_said {
            return;
        }
        if any {
            lines.push(value.as_bytes().trim_ascii());
        }
    }
    // One field line, the upstream's directives first; `private` alone when none were given.
    let value = if unparsed {
        HeaderValue::from_static("private, no-store")
    } else if lines.is_empty() {
        HeaderValue::from_static("private")
    } else {
        let mut value = lines.join(&b", "[..]);
        value.extend_from_slice(b", private");
        HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static("private"))
    };
    entry.insert(value);
}

/// Whether a `Cache-Control` directive (its name, and its argument when it has one) says how a
/// shared cache may keep the answer. `private="set-cookie"` keeps only the fields it names from
/// a shared cache, so it does not.
fn says_how_shared_caches_keep_it(name: &[u8], argument: Option<&[u8]>) -> bool {
    let is = |said: &[u8]| name.eq_ignore_ascii_case(said);
    match argument {
        None => is(b"private") || is(b"no-store") || is(b"public"),
        Some(seconds) => {
            is(b"s-maxage") && !seconds.is_empty() && seconds.iter().all(u8::is_ascii_digit)
        }
    }
}

/// Reads one `Cache-Control` line (RFC 9111 §5.2: `name[=token|quoted-string]`,
/// comma-separated, empty elements and white space around elements allowed), giving `each`
/// every directive's name and argument in order. `None` for a line that does not parse that
/// way (a quoted string that does not end, white space around `=`, a name or token with a
/// character it cannot hold, anything after an argument), which caches read in ways of their
/// own; `each` may then have seen the directives before the fault.
fn cache_directives<'a>(
    line: &'a [u8],
    mut each: impl FnMut(&'a [u8], Option<&'a [u8]>),
) -> Option<()> {
    use crate::http::is_token;
    let mut rest = line;
    loop {
        let end = rest
            .iter()
            .position(|&byte| byte == b',' || byte == b'=')
            .unwrap_or(rest.len());
        if rest.get(end) == Some(&b'=') {
            let name = rest[..end].trim_ascii_start();
            let (argument, after) = crate::http::parameter_value(&rest[end + 1..])?;
            if !is_token(name) || !(argument.starts_with(b"\"") || is_token(argument)) {
                return None;
            }
            each(name, Some(argument));
            rest = after.trim_ascii_start();
            if !rest.is_empty() && rest[0] != b',' {
                return None;
            }
        } else {
            let name = rest[..end].trim_ascii();
            if !name.is_empty() {
                if !is_token(name) {
                    return None;
                }
                each(name, None);
            }
            rest = &rest[end..];
        }
        match rest.split_first() {
            Some((_, after)) => rest = after,
            None => return Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trusted proxy's restating headers go on in Tollgate's words: the described host's
    /// port or the scheme's default, and the described scheme.
    #[test]
    fn a_trusted_proxys_scheme_and_port_are_said_again_as_tollgate_describes_them() {
        let restate = |sent: &[(&str, &str)], proto: &str, host: Option<&str>| {
            let mut headers = HeaderMap::new();
            for (name, value) in sent {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            let restated = strip_overrides_and_forwarded(&mut headers);
            restate_scheme_and_port(&mut headers, restated, proto, host);
            let mut left: Vec<(String, String)> = headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
                .collect();
            left.sort();
            left
        };
        let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        assert_eq!(
            restate(
                &[("x-forwarded-port", "1337")],
                "https",
                Some("app.example.com")
            ),
            [pair("x-forwarded-port", "443")]
        );
        assert_eq!(
            restate(
                &[("x-forwarded-port", "1337")],
                "http",
                Some("app.example.com:8080")
            ),
            [pair("x-forwarded-port", "8080")]
        );
        assert_eq!(
            restate(&[("x-forwarded-port", "1")], "https", Some("[::1]")),
            [pair("x-forwarded-port", "443")]
        );
        assert_eq!(
            restate(&[("x-forwarded-port", "1")], "http", Some("[::1]:8443")),
            [pair("x-forwarded-port", "8443")]
        );
        // No host described: no port said.
        assert!(restate(&[("x-forwarded-port", "1")], "http", None).is_empty());
        assert_eq!(
            restate(
                &[
                    ("x-forwarded-ssl", "off"),
                    ("x_forwarded_scheme", "http"),
                    ("x-scheme", "http")
                ],
                "https",
                Some("app.example.com")
            ),
            [pair("x-forwarded-ssl", "on"), pair("x-scheme", "https")]
        );
        // Nothing sent, nothing said.
        assert!(restate(&[], "https", Some("app.example.com")).is_empty());
    }

    #[test]
    fn clear_site_data_never_clears_tollgates_cookies() {
        let cleared = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("clear-site-data", value.parse().unwrap());
            }
            let changed = keep_tollgate_cookies_from_clear_site_data(&mut headers);
            let left: Vec<String> = headers
                .get_all("clear-site-data")
                .iter()
                .map(|value| value.to_str().unwrap().to_owned())
                .collect();
            (changed, left)
        };
        assert_eq!(cleared(&["\"cookies\""]), (true, vec![]));
        assert_eq!(
            cleared(&["\"cache\", \"cookies\"", "\"storage\""]),
            (true, vec!["\"cache\", \"storage\"".to_owned()])
        );
        assert_eq!(
            cleared(&["\"*\""]),
            (
                true,
                vec![
                    "\"cache\", \"storage\", \"executionContexts\", \"clientHints\", \"prefetchCache\", \"prerenderCache\""
                        .to_owned()
                ]
            )
        );
        assert_eq!(
            cleared(&["\"cache\""]),
            (false, vec!["\"cache\"".to_owned()])
        );
        assert_eq!(cleared(&[]), (false, vec![]));
    }

    #[test]
    fn an_authenticated_answer_is_private_unless_the_upstream_said_otherwise() {
        let marked_with = |status: StatusCode, fields: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            keep_out_of_shared_caches(status, &mut headers);
            headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .map(|value| value.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let marked = |values: &[&str]| {
            let fields: Vec<_> = values
                .iter()
                .map(|value| ("cache-control", *value))
                .collect();
            marked_with(StatusCode::OK, &fields)
        };
        assert_eq!(marked(&[]), ["private"]);
        assert_eq!(marked(&["", " , "]), ["private"]);
        assert_eq!(marked(&["max-age=60"]), ["max-age=60, private"]);
        assert_eq!(
            marked(&["no-cache", " must-revalidate "]),
            ["no-cache, must-revalidate, private"]
        );
        for said in [
            "private",
            "PUBLIC, max-age=60",
            "max-age=60, s-maxage=600",
            "no-store",
            "max-age=60,private",
            "x=\"a,b\", no-store",
        ] {
            assert_eq!(marked(&[said]), [said], "the upstream said: {said}");
        }
        assert_eq!(
            marked(&["max-age=60", "public"]),
            ["max-age=60", "public"],
            "said on a second line"
        );
        // Not what they look like: a `private` naming fields, directives inside a quoted
        // string, a name with white space before its `=`, an argument where none belongs.
        for not_said in [
            "max-age=60, private=\"set-cookie\"",
            "no-cache=\"x, no-store\", max-age=60",
            "private=\"x-foo, public\"",
            "max-age=60, x=\"a \\\" public, b\"",
            "s-maxage=\"60\"",
            "public=1",
        ] {
            assert_eq!(
                marked(&[not_said]),
                [format!("{not_said}, private")],
                "the upstream did not say: {not_said}"
            );
        }
        // What does not parse is read by caches in ways of their own, which may drop an
        // added directive with it (a quoted string that does not end takes it in), and by
        // browsers, which may have read a `no-store` in it: kept from every cache.
        for malformed in [
            "no-store, max-age=0; must-revalidate",
            "max-age=60, x=\"a, public",
            "max-age=60, x=\"a\\",
            "s-maxage =60",
            "s-maxage= 60",
            "x=a \"b, public, c\"",
            "max-age=60 public",
            "=\"x\", public",
            "max-age=",
            "no:store",
        ] {
            assert_eq!(marked(&[malformed]), ["private, no-store"], "{malformed}");
        }
        assert_eq!(
            marked(&["max-age=0;", "no-store"]),
            ["private, no-store"],
            "a line that does not parse before one that does"
        );
        // A CDN's own header is the CDN's; every other cache reads `Cache-Control`.
        assert_eq!(
            marked_with(
                StatusCode::OK,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store")
                ]
            ),
            ["max-age=60, private"]
        );
        for status in [StatusCode::NOT_MODIFIED, StatusCode::SWITCHING_PROTOCOLS] {
            assert!(marked_with(status, &[]).is_empty(), "{status}");
        }
    }

    #[test]
    fn identity_headers_are_removed_in_every_spelling() {
        let mut headers = HeaderMap::new();
        headers.append("x-user", "mallory".parse().unwrap());
        headers.append("X-USER", "mallory2".parse().unwrap());
        headers.append("x_user", "mallory3".parse().unwrap());
        headers.append("X_User", "mallory4".parse().unwrap());
        headers.append("X.User", "mallory5".parse().unwrap());
        headers.append("x.user", "mallory6".parse().unwrap());
        headers.append("x-username", "kept".parse().unwrap());
        headers.append("authorization", "Bearer forged".parse().unwrap());
        let configured = [
            HeaderName::from_static("x-user"),
            HeaderName::from_static("authorization"),
        ];
        strip_identity_headers(&mut headers, configured.iter());
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-username"], "kept");
    }

    #[test]
    fn identity_headers_of_the_gateways_tollgate_replaces_are_removed() {
        for name in [
            "x-forwarded-user",
            "x_forwarded_email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-forwarded-access-token",
            "x-auth-request-user",
            "x-auth-request-email",
            "x_auth_request_access_token",
            "oidc_claim_sub",
            "oidc-claim-email",
            "oidc.claim.email",
            "x.forwarded.user",
            "x.auth.request.email",
            "oidc_access_token",
            "oidc_id_token_payload",
            "x-userinfo",
            "x-access-token",
            "x-id-token",
            "x-consumer-username",
            "x-authenticated-userid",
            "x-credential-identifier",
            "remote-user",
            "remote_groups",
            "x-remote-user",
            "x-authentik-username",
            "x_authentik_groups",
            "x-pomerium-claim-email",
            "x-ms-client-principal-name",
            "x-goog-authenticated-user-email",
            "x-vouch-user",
            "cf-access-authenticated-user-email",
        ] {
            assert!(is_identity_elsewhere(name), "{name}");
        }
        for name in [
            "x-forwarded-for",
            "x-forwarded-user2",
            "x-user",
            "oidc",
            "oidcx-claim",
            "remote",
            "referer",
            "authorization",
            "cookie",
            "",
        ] {
            assert!(!is_identity_elsewhere(name), "{name}");
        }
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-user", "admin".parse().unwrap());
        headers.append("oidc_claim_email", "admin@example.com".parse().unwrap());
        headers.append("x-user", "mallory".parse().unwrap());
        headers.append("accept", "*/*".parse().unwrap());
        strip_identity_headers(&mut headers, [HeaderName::from_static("x-user")].iter());
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["accept"], "*/*");
    }

    #[test]
    fn headers_only_a_proxy_sets_are_whole_families_in_every_spelling() {
        for name in [
            "x-forwarded-for",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x_forwarded_access_token",
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-forwarded-client-cert",
            "x-original-uri",
            "x-original-url",
            "x_original_method",
            "x-real-ip",
            "x_real_ip",
            "x.real.ip",
            "x.forwarded.for",
            "x.http.method.override",
            "forwarded",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-forwarded",
            "forwarded-for",
            "x-client-ip",
            "x_cluster_client_ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "fly-client-ip",
            "x-envoy-external-address",
            "x-azure-clientip",
            "client-ip",
            "client_ip",
            "x-remote-ip",
            "x-remote-addr",
            "x-originating-ip",
            "x-proxyuser-ip",
            "do-connecting-ip",
            "x-appengine-user-ip",
            "ssl-client-verify",
            "ssl-client-subject-dn",
            "x-ssl-client-dn",
            "x-client-cert",
            "x-arr-clientcert",
            "x-amzn-mtls-clientcert",
            "x-ssl-cert",
            "x-client-cert-present",
            "cf-cert-verified",
        ] {
            assert!(is_said_by_proxies(name), "{name}");
        }
        for name in [
            "x-user",
            "x-request-id",
            "cf-ray",
            "authorization",
            "cookie",
            "host",
            "x",
            "",
        ] {
            assert!(!is_said_by_proxies(name), "{name}");
        }
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-user", "admin".parse().unwrap());
        headers.append("x_original_uri", "/admin".parse().unwrap());
        headers.append("accept", "*/*".parse().unwrap());
        strip_proxy_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["accept"], "*/*");
    }

    #[test]
    fn tollgate_cookies_are_removed_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; tollgate=2.xyz; tollgate_1=abc".parse().unwrap(),
        );
        headers.append(
            header::COOKIE,
            "tollgate_login_abc=s; tollgatex=keep; __Host-tollgate_login_d=s; b=2; __Host-tollgate_bind=x; tollgate_binding=keep; __Host-tollgate_form=f; tollgate_form=f; tollgate_formx=keep"
                .parse()
                .unwrap(),
        );
        strip_tollgate_cookies(&mut headers, "tollgate");
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(
            headers[header::COOKIE],
            "a=1; tollgatex=keep; b=2; tollgate_binding=keep; tollgate_formx=keep"
        );
        let mut only_ours = HeaderMap::new();
        only_ours.append(header::COOKIE, "tollgate=1".parse().unwrap());
        strip_tollgate_cookies(&mut only_ours, "tollgate");
        assert!(only_ours.get(header::COOKIE).is_none());
        let mut lookalike = HeaderMap::new();
        lookalike.append(header::COOKIE, "tollgatex=keep".parse().unwrap());
        strip_tollgate_cookies(&mut lookalike, "tollgate");
        assert_eq!(lookalike[header::COOKIE], "tollgatex=keep");
        // A `cookie_name` that is itself `__Host-` prefixed, with its login states.
        let mut prefixed = HeaderMap::new();
        prefixed.append(
            header::COOKIE,
            "__Host-tg=s.x; __Host-tg_1=y; __Host-tg_login_a=z; tg=keep"
                .parse()
                .unwrap(),
        );
        strip_tollgate_cookies(&mut prefixed, "__Host-tg");
        assert_eq!(prefixed[header::COOKIE], "tg=keep");
        let mut none_of_ours = HeaderMap::new();
        none_of_ours.append(header::COOKIE, "a=1;b=2".parse().unwrap());
        none_of_ours.append(header::COOKIE, "c=3".parse().unwrap());
        strip_tollgate_cookies(&mut none_of_ours, "tollgate");
        let joined: Vec<_> = none_of_ours.get_all(header::COOKIE).iter().collect();
        assert_eq!(
            joined,
            ["a=1; b=2; c=3"],
            "the fields of an HTTP/2 client, joined"
        );
        let mut one_field = HeaderMap::new();
        one_field.append(header::COOKIE, "a=1;b=2".parse().unwrap());
        strip_tollgate_cookies(&mut one_field, "tollgate");
        assert_eq!(one_field[header::COOKIE], "a=1;b=2", "left exactly as sent");
        let mut not_utf8 = HeaderMap::new();
        not_utf8.append(header::COOKIE, "a=1".parse().unwrap());
        not_utf8.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"b=\xff; tollgate=1").unwrap(),
        );
        strip_tollgate_cookies(&mut not_utf8, "tollgate");
        assert_eq!(not_utf8[header::COOKIE], "a=1");
    }
}
