//! Reading the `Cookie` header: every cookie of a request by name, borrowed from its headers.
//! Pure; used by sessions (to find Tollgate's cookies) and by the proxy (to remove them).

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// A request's cookies by name, borrowed from its headers.
pub type Cookies<'a> = BTreeMap<&'a str, &'a str>;

/// All cookies of a request, by name (the first value wins for duplicated names; pairs without
/// `=` or a name are skipped). Values are as sent, quotes included: Tollgate's own are base64url
/// and need no decoding.
pub fn request_cookies(headers: &HeaderMap) -> Cookies<'_> {
    let mut cookies = BTreeMap::new();
    for header in headers.get_all(axum::http::header::COOKIE) {
        // Word by word, not byte by byte like `HeaderValue::to_str`: a session cookie is long.
        let Some(text) = super::utf8(header.as_bytes()) else {
            continue;
        };
        for pair in cookie_pairs(text) {
            let pair = pair.trim_matches(|c: char| c == ' ' || c == '\t');
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            cookies.entry(name).or_insert(value.trim());
        }
    }
    cookies
}

/// The `;`-separated parts of a `Cookie` header. A session cookie runs to kilobytes: the
/// separators are found with `memchr`'s vectorised search rather than byte by byte.
pub fn cookie_pairs(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b';', text.as_bytes()).chain(std::iter::once(text.len()));
    ends.map(move |end| {
        // `;` is ASCII, so both ends are character boundaries.
        let pair = text.get(start..end).unwrap_or("");
        start = end + 1;
        pair
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_pairs_are_the_parts_between_semicolons() {
        let parts = |text| cookie_pairs(text).collect::<Vec<_>>();
        assert_eq!(parts("a=1; b=2;;c"), ["a=1", " b=2", "", "c"]);
        assert_eq!(parts("x;"), ["x", ""]);
        assert_eq!(parts(""), [""]);
        assert_eq!(parts("é=ü;ß"), ["é=ü", "ß"]);
    }

    #[test]
    fn request_cookies_are_read_as_browsers_send_them() {
        let mut headers = HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static(
                "a=1; b = two ;c=\"q\"; novalue; =x; a=second;; d=",
            ),
        );
        headers.append(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("e=5;b=again"),
        );
        let cookies = request_cookies(&headers);
        let expected: Cookies<'_> = [
            ("a", "1"),
            ("b", "two"),
            ("c", "\"q\""),
            ("d", ""),
            ("e", "5"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            cookies, expected,
            "first value wins; no name or no `=` is skipped"
        );
    }
}
