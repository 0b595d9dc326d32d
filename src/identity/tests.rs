//! Unit tests of what `identity` decides without a provider: how a bearer token is read, when
//! credentials are ambiguous, and what each failure tells the caller.

use axum::http::{HeaderMap, HeaderValue, header};

use super::*;
use crate::http::rejection::{Refusal, Rejection};

fn headers(authorizations: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in authorizations {
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    headers
}

#[test]
fn a_bearer_token_is_read_from_the_bearer_scheme_only() {
    assert_eq!(bearer_token(&headers(&[b"Bearer abc"])), Some(Ok("abc")));
    assert_eq!(bearer_token(&headers(&[b"bearer  abc "])), Some(Ok("abc")));
    assert_eq!(bearer_token(&headers(&[b"Basic YTpi"])), None);
    assert_eq!(bearer_token(&headers(&[b"Bearer  "])), None);
    assert_eq!(bearer_token(&headers(&[b"Bearer \xff"])), Some(Err(())));
    assert_eq!(
        bearer_token(&headers(&["Bearer tökén".as_bytes()])),
        Some(Ok("tökén")),
        "UTF-8 is read; validation refuses it"
    );
    assert_eq!(
        bearer_token(&headers(&["Bearer abc\u{a0}".as_bytes()])),
        Some(Ok("abc\u{a0}")),
        "only ASCII white space is cut; validation refuses the rest"
    );
    assert_eq!(bearer_token(&headers(&[b"Bearer\tabc"])), None, "one space");
    assert_eq!(bearer_token(&HeaderMap::new()), None);
}

/// What an application may read as a token, split at white space as its reader splits:
/// Latin-1 bytes as WSGI hands a header to Python, UTF-8 as Go's `strings.Fields` reads it.
#[test]
fn a_token_an_application_may_read_is_found_past_any_white_space_a_reader_splits_at() {
    let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let read = |value: &[u8]| -> Vec<Result<String, ()>> {
        tokens_an_application_may_read(&HeaderValue::from_bytes(value).unwrap())
            .map(|token| token.map(str::to_owned))
            .collect()
    };
    for (before, after) in [
        (&b"Bearer\xa0"[..], &b""[..]),
        (b"Bearer\x85", b"\xa0"),
        ("Bearer\u{a0}".as_bytes(), "\u{a0}".as_bytes()),
        ("JWT\u{3000}".as_bytes(), b""),
        ("\u{2009}JWT\u{2009}".as_bytes(), " \u{a0}".as_bytes()),
        (b"Token\xa0 ", b""),
        (b"\xa0", b"\xa0"),
        // As Envoy describes `Bearer\xa0…` (a byte that is not UTF-8 as `!`).
        (b"Bearer!", b"!"),
        // A scheme may hold a `!` (RFC 7235's token): read both ways, the token is found.
        (b"X!y ", b""),
    ] {
        let value = [before, jwt.as_bytes(), after].concat();
        assert!(
            read(&value).contains(&Ok(jwt.to_owned())),
            "{}: {:?}",
            String::from_utf8_lossy(&value),
            read(&value)
        );
    }
    // Each reading's token once: `X!y` read as a scheme finds it, `X` then `y …` finds none.
    assert_eq!(
        read(format!("X!y {jwt}").as_bytes()),
        vec![Ok(jwt.to_owned())]
    );
    // A JWT-shaped first word with more after it is the one an application's `split()[1]`
    // takes. Where the readings find different tokens, both are checked.
    assert_eq!(
        read(format!("JWT {jwt}\u{a0}x").as_bytes()),
        vec![Ok(jwt.to_owned())]
    );
    let other = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjZW8ifQ.";
    assert_eq!(
        read(format!("JWT!{other} {jwt}").as_bytes()),
        vec![Ok(jwt.to_owned()), Ok(other.to_owned())]
    );
    assert_eq!(read(b"Bearer\xa0opaque"), vec![Ok("opaque".to_owned())]);
    assert_eq!(read(b"Bearer\xa0\xff"), vec![Err(())]);
    assert!(read(b"Basic\xa0YWxpY2U6c2VjcmV0").is_empty());
    assert!(read(b"Digest realm=\"a.b.c\", nonce=\"x\"").is_empty());
    // Bytes of a letter that are not white space in either reading stay in the scheme.
    assert!(read("Béarer\u{e9}x".as_bytes()).is_empty());
}

#[test]
fn two_authorization_headers_or_a_header_and_a_query_token_are_ambiguous() {
    let ambiguous = |headers: &HeaderMap, query| ambiguous_credentials(headers, query, None);
    assert_eq!(ambiguous(&headers(&[b"Bearer a"]), None), None);
    assert_eq!(ambiguous(&headers(&[b"Bearer a"]), Some("x=1&y=2")), None);
    assert_eq!(
        ambiguous(&headers(&[b"Bearer a", b"Bearer b"]), None),
        Some("two Authorization headers")
    );
    assert_eq!(
        ambiguous(&headers(&[b"Bearer a"]), Some("x=1&access_token=b")),
        Some("a token both in the Authorization header and in the query")
    );
    // A token in the query alone is the application's business, not an ambiguity.
    assert_eq!(ambiguous(&HeaderMap::new(), Some("access_token=b")), None);
}

#[test]
fn two_token_cookies_are_ambiguous_in_one_cookie_header_or_two() {
    let cookies = |values: &[&'static str]| {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                axum::http::header::COOKIE,
                axum::http::HeaderValue::from_static(value),
            );
        }
        map
    };
    let ambiguous = |map: &HeaderMap| ambiguous_credentials(map, None, Some("tok"));
    assert_eq!(ambiguous(&cookies(&["a=1; tok=x; b=2"])), None);
    assert_eq!(
        ambiguous(&cookies(&["tok=x; tok=y"])),
        Some("two token cookies")
    );
    assert_eq!(
        ambiguous(&cookies(&["tok=x", "tok=y"])),
        Some("two token cookies")
    );
    assert_eq!(ambiguous(&cookies(&["tokx=1; xtok=2; tok=y"])), None);
    // Names as PHP reads them: `.`, space and `[` are `_`.
    let odj = |map: &HeaderMap| ambiguous_credentials(map, None, Some("odj_access_token"));
    for header in [
        "odj.access.token=x; odj_access_token=y",
        "odj%2Eaccess_token=x; odj_access_token=y",
        "odj[access_token=x; odj_access_token=y",
        "ODJ access_token=x; odj_access_token=y",
        // As Envoy describes a NO-BREAK SPACE (a byte that is not UTF-8) before a name.
        "!odj_access_token=x; odj_access_token=y",
    ] {
        assert_eq!(
            odj(&cookies(&[header])),
            Some("two token cookies"),
            "{header}"
        );
    }
    assert_eq!(odj(&cookies(&["odj_access_token=y"])), None);
    // A configured name that itself holds `%` still finds its twin.
    let percent = |map: &HeaderMap| ambiguous_credentials(map, None, Some("a%41"));
    assert_eq!(
        percent(&cookies(&["a%41=x; a%41=y"])),
        Some("two token cookies")
    );
    // Names as ASP.NET Core (any case) and PHP (percent-decoded) read them.
    assert_eq!(
        ambiguous(&cookies(&["TOK=x; tok=y"])),
        Some("two token cookies")
    );
    assert_eq!(
        ambiguous(&cookies(&["%74ok=x; tok=y"])),
        Some("two token cookies")
    );
    // Without a token cookie configured, cookies are no credential of this kind.
    assert_eq!(
        ambiguous_credentials(&cookies(&["tok=x; tok=y"]), None, None),
        None
    );
}

#[test]
fn each_failure_becomes_the_refusal_the_caller_is_owed() {
    let refusal = |error: IdentityError| Refusal::from(error);
    assert_eq!(
        refusal(IdentityError::Missing),
        Refusal::new(Rejection::Unauthenticated, "no credential")
    );
    assert_eq!(
        refusal(IdentityError::Invalid {
            credential: Credential::Bearer.as_str(),
            reason: "expired".to_owned(),
        }),
        Refusal::new(Rejection::InvalidToken, "bearer refused: expired")
    );
    assert_eq!(
        refusal(IdentityError::Invalid {
            credential: Credential::TokenCookie.as_str(),
            reason: "expired".to_owned(),
        }),
        Refusal::new(Rejection::Unauthenticated, "token_cookie refused: expired")
    );
    assert_eq!(
        refusal(IdentityError::StoreUnavailable("redis down".to_owned())),
        Refusal::new(Rejection::StoreUnavailable, "redis down")
    );
    assert_eq!(
        refusal(IdentityError::ProviderUnavailable {
            reason: "jwks timed out".to_owned(),
            set_cookies: Vec::new(),
        }),
        Refusal::new(Rejection::ProviderUnavailable, "jwks timed out")
    );
}

#[test]
fn the_access_token_is_the_bearer_then_the_cookie_token() {
    let identity = |bearer: Option<&str>, cookie: Option<&str>| Identity {
        claims: Claims::default(),
        credential: Credential::Bearer,
        session: None,
        bearer_header: bearer.map(|value| HeaderValue::from_str(value).unwrap()),
        cookie_token: cookie.map(str::to_owned),
        set_cookies: Vec::new(),
    };
    assert_eq!(
        identity(Some("Bearer t-1"), Some("t-2")).access_token(),
        Some("t-1")
    );
    assert_eq!(identity(None, Some("t-2")).access_token(), Some("t-2"));
    assert_eq!(identity(None, None).access_token(), None);
}

#[test]
fn a_token_cookie_after_a_comma_is_found_however_an_application_reads_its_name() {
    let with = |values: &[&[u8]]| {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        token_cookie_after_a_comma(&headers, "odj_access_token")
    };
    assert!(with(&[b"odj_access_token=a; x=1,odj_access_token=b"]));
    assert!(with(&[b"x=1, ODJ.Access_Token=b"]));
    assert!(with(&[b"x=1", b"y=2,odj%5Faccess%5Ftoken=b; z=3"]));
    assert!(with(&[b"x=\xff,odj_access_token=b"]), "not UTF-8 before it");
    // A `,` inside a value, and a token cookie before any `,`, hide nothing.
    assert!(!with(&[b"odj_access_token=a; pref=a,b; y=c,d"]));
    assert!(!with(&[b"x=1,other=odj_access_token"]));
    assert!(
        !with(&[b"pref=a,; odj_access_token=b"]),
        "an empty part after the comma"
    );
    assert!(!with(&[b"pref=a, ; odj_access_token=b"]));
    assert!(!with(&[]));
}
