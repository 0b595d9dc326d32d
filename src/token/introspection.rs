//! Checking an RFC 7662 introspection answer for an opaque access token. No IO, no clock.

use serde_json::{Map, Value};

use super::{Expectations, TokenError, audience_matches, check_subject, numeric_claim};

/// Checks an introspection answer (SPEC §6): `active` must be true; `iss`, when present, must be
/// the provider's issuer; a `token_type` or `token_use`, when present, must name an access
/// token (a refresh token, an ID token or a DPoP-bound token is refused), and a `cnf` (a token
/// bound to a key, RFC 7800) is refused whatever it says; `aud`, when present,
/// must hold an accepted audience; an answer with neither an `aud` nor a kind is refused (see
/// below); `exp`, when present, must not be past; `sub` is bounded. Returns `exp`.
///
/// Some servers look a token up among every kind they issue, whatever the hint, and answer
/// for a refresh token or an authorization code with only `active`, `client_id`, `iat` and
/// `exp` (Spring Authorization Server): such an answer says neither whom the token is for nor
/// that it is an access token, and taking it would let any client's refresh token or code in.
///
/// # Errors
/// The first check that fails.
pub fn check_introspection(
    answer: &Map<String, Value>,
    expected: &Expectations<'_>,
) -> Result<Option<i64>, TokenError> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    match answer.get("iss") {
        None => {}
        Some(Value::String(issuer)) if issuer == expected.issuer => {}
        Some(_) => return Err(TokenError::WrongIssuer),
    }
    let mut kinds = ["token_type", "token_use"]
        .iter()
        .filter_map(|name| answer.get(*name))
        .peekable();
    let says_its_kind = kinds.peek().is_some();
    if !kinds.all(|kind| kind.as_str().is_some_and(names_an_access_token)) {
        return Err(TokenError::NotAnAccessToken);
    }
    if !says_its_kind && !answer.contains_key("aud") {
        return Err(TokenError::NotAnAccessToken);
    }
    // Bound to a key its holder must prove (RFC 9449 §6.2, RFC 8705 §3.2), whatever its
    // `token_type` says: not a bearer token.
    if answer.contains_key("cnf") {
        return Err(TokenError::BoundToKey);
    }
    if answer.contains_key("aud") && !audience_matches(answer, expected.audiences) {
        return Err(TokenError::WrongAudience);
    }
    let exp = numeric_claim(answer, "exp")?;
    if exp.is_some_and(|exp| expected.now > exp.saturating_add(expected.leeway)) {
        return Err(TokenError::Expired);
    }
    check_subject(answer)?;
    Ok(exp)
}

/// Whether an introspection answer's `token_type` or `token_use` names a bearer access token.
fn names_an_access_token(kind: &str) -> bool {
    [
        "bearer",
        "access_token",
        "access",
        "urn:ietf:params:oauth:token-type:access_token",
    ]
    .iter()
    .any(|name| kind.eq_ignore_ascii_case(name))
}
