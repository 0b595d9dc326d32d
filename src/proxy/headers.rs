//! Header hygiene for the proxy: identity headers named in `route.headers` are removed from
//! the client's request in every spelling a backend might read as the same name (any case,
//! `_` for `-`, repeated), and Tollgate's own cookies never reach the upstream. Pure.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Whether two header names read the same to a backend that ignores case and reads `_` as `-`.
fn same_header(left: &str, right: &str) -> bool {
    let normal = |byte: u8| {
        if byte == b'_' {
            b'-'
        } else {
            byte.to_ascii_lowercase()
        }
    };
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .all(|(a, b)| normal(a) == normal(b))
}

/// Removes every request header that a backend could take for one of `identity_headers`.
pub fn strip_identity_headers<'a>(
    headers: &mut HeaderMap,
    identity_headers: impl Iterator<Item = &'a HeaderName> + Clone,
) {
    let is_forbidden = |name: &HeaderName| {
        identity_headers
            .clone()
            .any(|forbidden| same_header(name.as_str(), forbidden.as_str()))
    };
    if !headers.keys().any(is_forbidden) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_forbidden(name))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Whether a cookie name is one of Tollgate's: the session cookie, its chunks, login states.
pub fn is_tollgate_cookie(name: &str, cookie_name: &str) -> bool {
    let Some(rest) = name.strip_prefix(cookie_name) else {
        return false;
    };
    rest.is_empty()
        || rest.strip_prefix('_').is_some_and(|suffix| {
            suffix.bytes().all(|byte| byte.is_ascii_digit()) && !suffix.is_empty()
        })
        || rest.starts_with("_login_")
}

/// Removes Tollgate's cookies from the `Cookie` header(s), keeping the others in order. Headers
/// that are not UTF-8 are dropped.
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
    for value in headers.get_all(header::COOKIE) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_removed_in_every_spelling() {
        let mut headers = HeaderMap::new();
        headers.append("x-user", "mallory".parse().unwrap());
        headers.append("X-USER", "mallory2".parse().unwrap());
        headers.append("x_user", "mallory3".parse().unwrap());
        headers.append("X_User", "mallory4".parse().unwrap());
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
    fn tollgate_cookies_are_removed_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; tollgate=2.xyz; tollgate_1=abc".parse().unwrap(),
        );
        headers.append(
            header::COOKIE,
            "tollgate_login_abc=s; tollgatex=keep; b=2".parse().unwrap(),
        );
        strip_tollgate_cookies(&mut headers, "tollgate");
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; tollgatex=keep; b=2");
        let mut only_ours = HeaderMap::new();
        only_ours.append(header::COOKIE, "tollgate=1".parse().unwrap());
        strip_tollgate_cookies(&mut only_ours, "tollgate");
        assert!(only_ours.get(header::COOKIE).is_none());
        let mut lookalike = HeaderMap::new();
        lookalike.append(header::COOKIE, "tollgatex=keep".parse().unwrap());
        strip_tollgate_cookies(&mut lookalike, "tollgate");
        assert_eq!(lookalike[header::COOKIE], "tollgatex=keep");
        let mut none_of_ours = HeaderMap::new();
        none_of_ours.append(header::COOKIE, "a=1;b=2".parse().unwrap());
        none_of_ours.append(header::COOKIE, "c=3".parse().unwrap());
        strip_tollgate_cookies(&mut none_of_ours, "tollgate");
        let untouched: Vec<_> = none_of_ours.get_all(header::COOKIE).iter().collect();
        assert_eq!(untouched, ["a=1;b=2", "c=3"], "left exactly as sent");
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
