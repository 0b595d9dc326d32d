//! The bodies of the fuzz targets: every parser that reads attacker input, called with
//! arbitrary bytes. `fuzz/` (cargo-fuzz, libFuzzer) and the stable corpus runner
//! (`tests/it/fuzz.rs`) call the same functions. Each must return for any input; the
//! properties below are asserted, so a violation is a crash the fuzzer reports. Not part of the
//! product's API.

// A violated property must crash the fuzzer: that is how it reports.
#![allow(clippy::panic)]

use std::collections::BTreeMap;

use crate::http::canonical::{canonical_host, canonical_path};
use crate::login::redirect::{AllowedRedirectDomain, validate_redirect};

/// One fuzz target: any bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call
/// them.
pub const TARGETS: [(&str, Target); 9] = [
    ("jwt", jwt),
    ("auth_query", auth_query),
    ("canonical_path", canonical),
    ("path_readings", path_readings),
    ("redirect", redirect),
    ("sealed_cookie", sealed_cookie),
    ("config", config),
    ("cookie_header", cookie_header),
    ("compact_session", compact_session),
];

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A fixed P-256 public key: fuzzed tokens are checked against it.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"fuzz","alg":"ES256","use":"sig","x":"gNlJQ5m2yrpPftcx6noDxmPMaTHB8ek88XGYduu83C4","y":"divuwUiIaP2KlYVDHiottqFtqShGHDuKCJi7kzJUYfQ"}]}"#;

/// JWT decoding and validation: the first byte chooses what the rest is — a compact token
/// (header, signature, claims), a claims object (the checks a signed token's claims go
/// through), or a JWKS document.
pub fn jwt(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let audiences = ["api".to_owned()];
    let expected = crate::token::Expectations {
        issuer: "https://idp.example",
        audiences: &audiences,
        leeway: 60,
        now: 1_800_000_000,
    };
    match selector % 3 {
        0 => {
            let Ok(keys) = crate::jose::KeySet::from_jwks_json(JWKS.as_bytes()) else {
                return;
            };
            let token = text(rest);
            if let Ok(claims) =
                crate::token::validate_access_token(&token, &keys, &expected, Some("client"))
            {
                panic!("a token no key signed was accepted: {claims:?}");
            }
        }
        1 => {
            if let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(rest) {
                let _ = crate::token::check_claims(&claims, &expected);
                let _ = crate::token::numeric_claim(&claims, "exp");
            }
        }
        _ => {
            let _ = crate::jose::KeySet::from_jwks_json(rest);
        }
    }
}

/// The `/auth` query parser.
pub fn auth_query(data: &[u8]) {
    if let Ok(query) = crate::policy::AuthQuery::parse(&text(data)) {
        for rule in &query.skip_rules {
            let _ = rule.skips(None, "/");
        }
    }
}

/// The canonical path and host: a canonical path is a fixed point, starts with `/`, and holds
/// no empty, `.` or `..` segment.
pub fn canonical(data: &[u8]) {
    let raw = text(data);
    if let Ok(path) = canonical_path(&raw) {
        assert!(path.starts_with('/'), "{raw:?} → {path:?}");
        let again = canonical_path(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
        assert_eq!(again, path, "not a fixed point");
        let inner = path.trim_end_matches('/');
        assert!(
            !inner.contains("//") && !inner.split('/').any(|s| s == "." || s == ".."),
            "{raw:?} → {path:?}"
        );
    }
    // IPv6 literals lose their brackets, so only names are fixed points.
    if let Some(host) = canonical_host(&raw).filter(|host| !host.contains(':')) {
        assert_eq!(canonical_host(&host).as_deref(), Some(&*host), "{raw:?}");
    }
}

/// `/auth`'s reading of an original path against other readings of it. nginx picks its
/// location on the path decoded, with slashes merged and dot segments resolved; an application
/// may route on the path as sent (Express), decoded. For a path `/auth` takes (it has a single
/// reading, `forward_auth::single_reading`), nginx's location is no laxer than the section the
/// application serves it from, and the skip rules (on the canonical path) see what nginx sees.
pub fn path_readings(data: &[u8]) {
    let text = text(data);
    let raw = text.split(['?', '#']).next().unwrap_or_default();
    // An original request's path is absolute (origin form).
    if !raw.starts_with('/') || crate::forward_auth::single_reading(raw).is_err() {
        return;
    }
    let Some(as_sent) = percent_decoded(raw) else {
        return;
    };
    let nginx = resolved(&as_sent);
    // nginx's location must be no laxer than the application's section: a path the
    // application serves as `/admin/`'s is `/admin/`'s to nginx, and one nginx serves as
    // `/public/`'s is `/public/`'s to the application.
    assert!(
        !as_sent.starts_with("/admin/") || nginx.starts_with("/admin/"),
        "{raw:?}: the application reads {as_sent:?}, nginx {nginx:?}"
    );
    assert!(
        !nginx.starts_with("/public/") || as_sent.starts_with("/public/"),
        "{raw:?}: nginx reads {nginx:?}, the application {as_sent:?}"
    );
    // The skip rules see what nginx sees.
    if let Some(decided) = canonical_path(raw)
        .ok()
        .and_then(|canonical| percent_decoded(&canonical))
    {
        assert_eq!(decided, nginx, "{raw:?}: nginx reads another path");
    }
}

/// `text` with every `%XX` decoded (lossy), or `None` when an escape is not one (nginx answers
/// 400).
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A decoded path as nginx resolves it: slashes merged, `.` and `..` segments resolved.
fn resolved(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if path.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

/// Redirect (`rd`) validation: whatever passes is a plain path on this host or a URL whose
/// host is allowed.
pub fn redirect(data: &[u8]) {
    let target = text(data);
    let allowed: Vec<AllowedRedirectDomain> = [".example.com", "app.example.org:8443"]
        .iter()
        .filter_map(|entry| entry.parse().ok())
        .collect();
    let Ok(accepted) = validate_redirect(&target, &allowed) else {
        return;
    };
    if accepted.starts_with('/') {
        assert!(
            !accepted.starts_with("//") && !accepted.contains('\\'),
            "{target:?} → {accepted:?}"
        );
    } else {
        let url = url::Url::parse(&accepted).unwrap_or_else(|_| panic!("{accepted:?}"));
        let host = url.host_str().unwrap_or_default();
        assert!(
            host == "example.com"
                || host.ends_with(".example.com")
                || (host == "app.example.org" && url.port_or_known_default() == Some(8443)),
            "{target:?} → {accepted:?}"
        );
    }
}

/// Opening sealed cookies: attacker text never opens.
pub fn sealed_cookie(data: &[u8]) {
    let sealer = crate::session::seal::Sealer::new(&[crate::secret::Secret::new(
        "fuzz-session-secret-fuzz-session-secret".to_owned(),
    )]);
    let sealed = text(data);
    if let Ok(opened) = sealer.open("session", &sealed) {
        panic!("attacker text opened: {opened:?}");
    }
}

/// Config loading, with no environment. Configs naming files are skipped: the operator's
/// file system is not attacker input, and `/dev/zero` would only measure patience.
pub fn config(data: &[u8]) {
    let text = text(data);
    if !text.contains("_file") {
        let _ = crate::config::load(&text, &BTreeMap::new());
    }
}

/// Reading `Cookie` headers and removing Tollgate's from them before a request goes upstream.
/// The input is split at `\n` into headers (lines that are no valid header value are left
/// out). After the proxy's removal, the parts forwarded are the parts sent (of the UTF-8
/// headers) but Tollgate's, in order, so every other cookie reads as it did before and none of
/// Tollgate's is left; and headers that held none of Tollgate's (and are UTF-8) are left
/// exactly as sent. "Tollgate's" is what `http::cookies::pairs` and `is_tollgate_cookie` say:
/// the property is that the removal agrees with the reading, which the session code shares.
pub fn cookie_header(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderValue, header::COOKIE};

    use crate::http::cookies::{Cookies, pairs, request_cookies};
    use crate::proxy::headers::{is_tollgate_cookie, strip_tollgate_cookies};

    let ours = |name: &str| is_tollgate_cookie(name, "tollgate");
    let mut sent = HeaderMap::new();
    for line in data.split(|byte| *byte == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            sent.append(COOKIE, value);
        }
    }
    let mut forwarded = sent.clone();
    strip_tollgate_cookies(&mut forwarded, "tollgate");

    let theirs: Cookies<'_> = request_cookies(&sent)
        .into_iter()
        .filter(|(name, _)| !ours(name))
        .collect();
    assert_eq!(
        request_cookies(&forwarded),
        theirs,
        "the other cookies read differently after the removal: {sent:?} → {forwarded:?}"
    );
    // The UTF-8 headers' texts, and whether every header was UTF-8.
    let texts = |headers: &HeaderMap| -> (Vec<String>, bool) {
        let all = headers.get_all(COOKIE);
        let texts: Vec<String> = all
            .iter()
            .filter_map(|value| crate::http::utf8(value.as_bytes()).map(str::to_owned))
            .collect();
        let every = texts.len() == all.iter().count();
        (texts, every)
    };
    let (forwarded_texts, every) = texts(&forwarded);
    assert!(
        every,
        "a header that is not UTF-8 was forwarded: {forwarded:?}"
    );
    for text in &forwarded_texts {
        if let Some(pair) = pairs(text).find(|pair| ours(pair.name)) {
            panic!("{pair:?} was forwarded: {sent:?} → {forwarded:?}");
        }
    }
    let parts = |texts: &[String]| -> Vec<String> {
        texts
            .iter()
            .flat_map(|text| pairs(text))
            .filter(|pair| !ours(pair.name))
            .map(|pair| pair.text.to_owned())
            .collect()
    };
    let (sent_texts, every_sent) = texts(&sent);
    assert_eq!(
        parts(&forwarded_texts),
        parts(&sent_texts),
        "parts other than Tollgate's were lost, changed or moved: {sent:?} → {forwarded:?}"
    );
    // Several fields (an HTTP/2 client's) go on as one, as HTTP/1.1 allows only one.
    assert!(
        forwarded_texts.len() <= 1,
        "the fields were not joined: {sent:?} → {forwarded:?}"
    );
    if every_sent
        && sent_texts.len() == 1
        && !sent_texts
            .iter()
            .any(|text| pairs(text).any(|pair| ours(pair.name)))
    {
        assert_eq!(
            forwarded_texts, sent_texts,
            "a header without ours was changed"
        );
    }
}

/// The compact form of a session, which the memory store keeps and the cookie store seals:
/// the first byte chooses what the rest is.
///
/// Even: a session as lines (provider, ID token, access token, refresh token, claims). The
/// claims line is a JSON object; or `=`, the ID token's own claims; or `+` and an object laid
/// over them; or anything else, a `sub` alone. The same session comes back (tokens and
/// claims exactly), through the cookie's bytes too, and its facts (provider, `sub`, `sid`,
/// which select sessions for a back-channel logout and count a user's sessions) are the
/// session's own.
///
/// Odd: bytes a cookie may open to. They are refused, or expand to a session whose compact
/// form expands to it again; never a panic.
pub fn compact_session(data: &[u8]) {
    use crate::session::Session;
    use crate::session::compact::{CompactSession, SessionFacts};

    let as_json = |session: Option<&Session>| session.and_then(|s| serde_json::to_value(s).ok());
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    if choice % 2 == 1 {
        if let Some(compact) = CompactSession::from_bytes(rest) {
            let _ = compact.facts();
            if let Some(session) = compact.expand() {
                let again = CompactSession::new(&session).expand();
                assert_eq!(as_json(again.as_ref()), as_json(Some(&session)));
            }
        }
        return;
    }
    let text = text(rest);
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or_default().to_owned();
    let (provider, id_token, access, refresh, claims) = (next(), next(), next(), next(), next());
    let own = || {
        use base64::Engine as _;
        id_token
            .split('.')
            .nth(1)
            .and_then(|payload| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .ok()
            })
            .and_then(|bytes| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
            })
            .unwrap_or_default()
    };
    let claims = if claims == "=" {
        own()
    } else if let Some(overlay) = claims.strip_prefix('+') {
        let mut merged = own();
        if let Ok(serde_json::Value::Object(overlay)) = serde_json::from_str(overlay) {
            merged.extend(overlay);
        }
        merged
    } else {
        match serde_json::from_str(&claims) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => serde_json::Map::from_iter([("sub".to_owned(), claims.into())]),
        }
    };
    let session = Session {
        provider,
        claims: std::sync::Arc::new(claims),
        id_token,
        access_token: (!access.is_empty()).then_some(access),
        refresh_token: (!refresh.is_empty()).then_some(refresh),
        access_expires_at: (choice & 2 != 0).then_some(1_700_000_300),
        created_at: 1_700_000_000,
        expires_at: 1_700_086_400,
    };
    let compact = CompactSession::new(&session);
    assert_eq!(
        as_json(compact.expand().as_ref()),
        as_json(Some(&session)),
        "{session:?}"
    );
    let read_back = CompactSession::from_bytes(&compact.to_bytes());
    assert_eq!(read_back.as_ref(), Some(&compact));
    let (facts, expected) = (compact.facts(), SessionFacts::of(&session));
    assert_eq!(
        (
            facts.provider,
            facts.sub,
            facts.sid,
            facts.created_at,
            facts.expires_at
        ),
        (
            expected.provider,
            expected.sub,
            expected.sid,
            expected.created_at,
            expected.expires_at
        ),
        "{session:?}"
    );
}
