//! Whose page a browser's request comes from, by its `Origin`. Pure.

use axum::http::{HeaderMap, header};

use super::SEC_FETCH_MODE;
use super::rejection::{Refusal, Rejection};

/// Whether `headers` are a WebSocket handshake (an `Upgrade`; the handshake's
/// `Sec-WebSocket-Key`, which an ingress passes to forward-auth where it drops the hop-by-hop
/// `Upgrade`; or `Sec-Fetch-Mode: websocket`, which a browser sends on every handshake, over
/// HTTP/2 too, where there is neither) from a page whose `Origin` names a host other than
/// `base`'s, the one the request is for (none: every host is another), or is no URL (`null`),
/// or, when the request is over https, a page of plain http. A browser sends a page's
/// WebSocket the session cookie whenever the two are the same site (a sibling subdomain, and
/// where a browser takes http and https for one site, a page over http) and applies no CORS to
/// it, so such a page could read and act as the signed-in person. The cookie's own boundary is
/// the host, never the port; over https, whose cookies are `Secure`, it is the scheme too: a
/// page over plain http is anyone's on the network path. A client that sends no `Origin` is no
/// browser.
pub fn websocket_from_another_host(headers: &HeaderMap, base: Option<&url::Url>) -> bool {
    // `Origin` first: most requests carry none (a browser's navigations, every API client),
    // and one lookup then ends it.
    let origins = headers.get_all(header::ORIGIN);
    if origins.iter().next().is_none() {
        return false;
    }
    let handshake = headers.contains_key(header::UPGRADE)
        || headers.contains_key(header::SEC_WEBSOCKET_KEY)
        || headers
            .get_all(&SEC_FETCH_MODE)
            .iter()
            .any(|mode| mode.as_bytes().eq_ignore_ascii_case(b"websocket"));
    handshake
        && origins.iter().any(|origin| {
            let url = origin
                .to_str()
                .ok()
                .and_then(|origin| url::Url::parse(origin).ok());
            let host = base.and_then(url::Url::host_str).unwrap_or_default();
            let secure = base.is_some_and(|base| base.scheme() == "https");
            url.as_ref().is_none_or(|url| {
                url.host_str()
                    .is_none_or(|origin_host| !origin_host.eq_ignore_ascii_case(host))
                    || (secure && url.scheme() != "https")
            })
        })
}

/// The refusal of a WebSocket [`websocket_from_another_host`] found: a 403 naming what is
/// let through, the same from the proxy and from forward-auth.
pub fn refusal() -> Refusal {
    Refusal::new(
        Rejection::Forbidden("a connection opened by a page of this site's own host".to_owned()),
        "a WebSocket asked for by a page of another host",
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn an_upgrade_is_from_another_host_when_its_origin_names_one() {
        let https = url::Url::parse("https://app.example.com/").unwrap();
        let from_to = |base: &url::Url, fields: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            websocket_from_another_host(&headers, Some(base))
        };
        let from = |fields: &[(&'static str, &str)]| from_to(&https, fields);
        let upgrade = ("upgrade", "websocket");
        for origin in [
            "https://evil.example.com",
            "https://example.com",
            "https://app.example.com.evil.test",
            "null",
            "app.example.com",
            "",
        ] {
            assert!(from(&[upgrade, ("origin", origin)]), "{origin}");
        }
        // The cookie's boundary is the host: another port of it is the same.
        for origin in ["https://app.example.com", "https://APP.example.com:8443"] {
            assert!(!from(&[upgrade, ("origin", origin)]), "{origin}");
        }
        // Over https, a page of plain http is anyone's on the network path (its `Secure`
        // cookies go with a `wss:` handshake such a page opens): another.
        assert!(from(&[upgrade, ("origin", "http://app.example.com")]));
        let http = url::Url::parse("http://app.example.com:8080/").unwrap();
        for origin in ["http://app.example.com", "https://app.example.com"] {
            assert!(!from_to(&http, &[upgrade, ("origin", origin)]), "{origin}");
        }
        // With no host known, every page is another's.
        let mut headers = HeaderMap::new();
        headers.append("upgrade", HeaderValue::from_static("websocket"));
        headers.append(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(websocket_from_another_host(&headers, None));
        // An ingress drops `Upgrade` (hop by hop) before `/auth`, and passes the handshake's key.
        assert!(from(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", "https://evil.example.com"),
        ]));
        // A browser's WebSocket over HTTP/2 (RFC 8441) has neither, and says what it is.
        assert!(from(&[
            ("sec-fetch-mode", "websocket"),
            ("origin", "https://evil.example.com"),
        ]));
        assert!(!from(&[
            ("sec-fetch-mode", "cors"),
            ("origin", "https://evil.example.com"),
        ]));
        // Any one of several.
        assert!(from(&[
            upgrade,
            ("origin", "https://app.example.com"),
            ("origin", "https://evil.example.com"),
        ]));
        // Not a browser's, or not an upgrade.
        assert!(!from(&[upgrade]));
        assert!(!from(&[("origin", "https://evil.example.com")]));
    }
}
