//! Whose page a browser's request comes from, by its `Origin`. Pure.

use axum::http::{HeaderMap, header};

use super::SEC_FETCH_MODE;
use super::rejection::{Refusal, Rejection};

/// Whether `headers` are a WebSocket handshake (an `Upgrade`; the handshake's
/// `Sec-WebSocket-Key`, which an ingress passes to forward-auth where it drops the hop-by-hop
/// `Upgrade`; or `Sec-Fetch-Mode: websocket`, which a browser sends on every handshake, over
/// HTTP/2 too, where there is neither) from a page whose `Origin` names a host other than
/// `host`, the one the request is for, or is no URL (`null`). A browser sends a page's WebSocket the session cookie
/// whenever the two are the same site (a sibling subdomain) and applies no CORS to it, so such
/// a page could read and act as the signed-in person; the cookie's own boundary is the host
/// (never the scheme or the port), and so is this one. A client that sends no `Origin` is no
/// browser.
pub fn websocket_from_another_host(headers: &HeaderMap, host: &str) -> bool {
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
            url.as_ref()
                .and_then(url::Url::host_str)
                .is_none_or(|origin_host| !origin_host.eq_ignore_ascii_case(host))
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
        let from = |fields: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            websocket_from_another_host(&headers, "app.example.com")
        };
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
        // The cookie's boundary is the host: another scheme or port of it is the same.
        for origin in [
            "https://app.example.com",
            "https://APP.example.com:8443",
            "http://app.example.com",
        ] {
            assert!(!from(&[upgrade, ("origin", origin)]), "{origin}");
        }
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
