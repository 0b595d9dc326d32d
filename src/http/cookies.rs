//! Reading the `Cookie` header: every cookie of a request by name, borrowed from its headers.
//! Pure; used by sessions (to find Tollgate's cookies) and by the proxy (to remove them).

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// A request's cookies by name, borrowed from its headers.
pub type Cookies<'a> = BTreeMap<&'a str, &'a str>;

/// One part of a `Cookie` header, trimmed of blanks (SP, HTAB) and split into name and value.
/// A part without `=` is all name: the safer reading for removal (`tollgate` alone is one of
/// Tollgate's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The part without the blanks around it.
    pub text: &'a str,
    /// The text before the first `=`, or all of it when there is none.
    pub name: &'a str,
    /// The text after the first `=`; `None` without one.
    pub value: Option<&'a str>,
}

/// The parts of one `Cookie` header's text, in order, empty ones (`;;`, a trailing `; `)
/// left out. This is the one reading of a `Cookie` header: the names Tollgate reads its
/// cookies by ([`request_cookies`]) are the names the proxy removes them by, by construction.
pub fn pairs(text: &str) -> impl Iterator<Item = Pair<'_>> {
    parts(text).filter_map(|part| {
        // A header value holds no control character but HTAB (`HeaderValue`, `httparse`), so
        // the ASCII blanks trimmed here are SP and HTAB.
        let text = part.trim_ascii();
        if text.is_empty() {
            return None;
        }
        // Byte by byte, not `split_once`: a name is short, and a vectorised search costs more
        // to start than to finish here.
        let (name, value) = match text.bytes().position(|byte| byte == b'=') {
            // `=` is ASCII, so both sides of it are character boundaries.
            Some(at) => (
                text.get(..at).unwrap_or("").trim_ascii_end(),
                Some(text.get(at + 1..).unwrap_or("").trim_ascii_start()),
            ),
            None => (text, None),
        };
        Some(Pair { text, name, value })
    })
}

/// The token service's login form token cookie (`__Host-` over https): fixed, whatever
/// `session.cookie_name` is, and Tollgate's all the same.
pub const FORM_TOKEN_COOKIE: &str = "tollgate_form";

/// Whether `name` is the session cookie `cookie_name` or one of its chunks (`<name>_1` …).
/// The one reading of those names: sessions look for them sent twice, the proxy removes them.
pub fn is_session_or_chunk(name: &str, cookie_name: &str) -> bool {
    name.strip_prefix(cookie_name).is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('_').is_some_and(|index| {
                !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit())
            })
    })
}

/// All cookies of a request, by name (the first value wins for duplicated names; pairs without
/// `=` or a name are skipped, and so are headers that are not UTF-8). Values are as sent, quotes
/// included: Tollgate's own are base64url and need no decoding.
pub fn request_cookies(headers: &HeaderMap) -> Cookies<'_> {
    let mut cookies = BTreeMap::new();
    for header in headers.get_all(axum::http::header::COOKIE) {
        // Word by word, not byte by byte like `HeaderValue::to_str`: a session cookie is long.
        let Some(text) = super::utf8(header.as_bytes()) else {
            continue;
        };
        for pair in pairs(text) {
            if let Some(value) = pair.value
                && !pair.name.is_empty()
            {
                cookies.entry(pair.name).or_insert(value);
            }
        }
    }
    cookies
}

/// The `;`-separated parts of a `Cookie` header. A session cookie runs to kilobytes: the
/// separators are found with `memchr`'s vectorised search rather than byte by byte.
fn parts(text: &str) -> impl Iterator<Item = &str> {
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
    fn parts_are_the_text_between_semicolons() {
        let split = |text| parts(text).collect::<Vec<_>>();
        assert_eq!(split("a=1; b=2;;c"), ["a=1", " b=2", "", "c"]);
        assert_eq!(split("x;"), ["x", ""]);
        assert_eq!(split(""), [""]);
        assert_eq!(split("é=ü;ß"), ["é=ü", "ß"]);
    }

    #[test]
    fn pairs_are_trimmed_of_blanks_only_and_split_at_the_first_equals_sign() {
        let pair = |text, name, value| Pair { text, name, value };
        let read = |text| pairs(text).collect::<Vec<_>>();
        assert_eq!(
            read(" a = 1 ;\tb=x=y\t; ;novalue;=v; c=;"),
            [
                pair("a = 1", "a", Some("1")),
                pair("b=x=y", "b", Some("x=y")),
                pair("novalue", "novalue", None),
                pair("=v", "", Some("v")),
                pair("c=", "c", Some("")),
            ]
        );
        // No-break space (U+00A0) is not a blank: a name that holds one is another name.
        assert_eq!(
            read("\u{a0}tollgate=1; tollgate\u{a0}=2"),
            [
                pair("\u{a0}tollgate=1", "\u{a0}tollgate", Some("1")),
                pair("tollgate\u{a0}=2", "tollgate\u{a0}", Some("2")),
            ]
        );
        assert!(read("; ;\t;").is_empty());
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
